"""Do the two sides do the same work? Numerical checks run before the benchmarks: `python -m benchmarks.checks`.

- learning-rate curves: optax's onecycle vs torch_models.onecycle_schedule (the OneCycleLR torch_workers uses),
  optax's warmup-cosine vs the plain-Python formula torch's LambdaLR uses: equal at every step;
- models: jaxdl's CNN and GPT with their flax parameters copied into the PyTorch twins give the same logits, loss
  and gradient norm on the same batch; same parameter counts; initialisation of the same scale per layer;
- data: the index batches the driver writes are the ones jaxdl's grain pipeline draws; the torch side's
  tiny-shakespeare split is jaxdl's;
- weight decay: the torch GPT decays exactly the parameters optax's mask decays;
- the parameters' moving average (optim.ema_decay): jaxdl's TrainState.update_average, the bare loop's own
  formula (in its compiled step) and torch_models.parameter_average keep the same average of the same parameters.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import jaxdl
from benchmarks import common, torch_models
from jaxdl import models, paths
from jaxdl.data import mnist, text

torch.set_num_threads(1)
torch.manual_seed(0)  # the init-scale comparison is statistical: fixed draws
RESULTS: dict[str, bool] = {}


def check(name: str, ok: bool, detail: str) -> None:
    RESULTS[name] = bool(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)


def index_batches(length: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """The first `steps` batches of example indices jaxdl's training pipeline draws: its own iterator, run over a
    source whose examples are their indices."""
    from jaxdl import data

    numbers = data.ArraySource({"index": np.arange(length)})
    batches = data.train_batches(data.Dataset(train=numbers, test=numbers), numbers, batch_size, seed, 0, 1)
    return np.stack([next(batches)["index"] for _ in range(steps)]).astype(np.int64)


def check_recipes() -> None:
    """The PyTorch arms' recipes (benchmarks/common.py) are the jaxdl experiments' current defaults."""
    for experiment, recipe in (("mnist_cnn", common.CNN_RECIPE), ("shakespeare_gpt_reference", common.GPT_RECIPE)):
        config = jaxdl.get_config(experiment)
        ours = {key: config[key.split(".")[0]][key.split(".")[1]] for key in recipe}  # "optim.b2" -> config.optim.b2
        differ = {key: (value, ours[key]) for key, value in recipe.items() if value != ours[key]}
        check(f"{experiment} recipe", not differ, f"PyTorch vs jaxdl: {differ}" if differ else "same settings")


def check_schedules() -> None:
    cnn, gpt = common.CNN_RECIPE, common.GPT_RECIPE
    total, peak = common.CNN_STEPS, cnn["optim.learning_rate"]
    pct, div = cnn["optim.onecycle_pct_start"], cnn["optim.onecycle_final_div"]
    optax_curve = optax.cosine_onecycle_schedule(total, peak, pct_start=pct, final_div_factor=div)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    scheduler = torch_models.onecycle_schedule(optimizer, total, peak, pct, div)
    worst = 0.0
    for step in range(total):
        ours = float(optax_curve(step))
        # optax computes in float32: a few 1e-5 of the rate are its rounding, not a different curve, and so is
        # ~1e-10 where the rate ends near peak / 25,000 (its 1 + cos(x) loses digits there): hence the floor.
        worst = max(worst, abs(optimizer.param_groups[0]["lr"] - ours) / (ours + 1e-3 * peak))
        optimizer.step()
        scheduler.step()
    check("onecycle schedule", worst < 1e-4, f"max difference {worst:.1e} of the rate (+ peak/1e3) over {total} steps")
    peak, warmup, end = gpt["optim.learning_rate"], gpt["optim.warmup_steps"], gpt["optim.min_learning_rate"]
    total = gpt["train.max_steps"]
    cosine = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, end_value=end)
    worst = max(abs(float(cosine(s)) - common.warmup_cosine(s, peak, warmup, total, end)) for s in range(total))
    check("warmup-cosine schedule", worst < 1e-9, f"max absolute difference {worst:.1e} over {total} steps")


def to_torch(array) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))


def compare(name: str, jax_loss_fn, params, torch_model, torch_loss) -> None:
    """Same loss and gradient norm from the same weights and batch."""
    loss, grads = jax.value_and_grad(jax_loss_fn)(params)
    grad_norm = float(optax.tree.norm(grads))
    torch_model.zero_grad()
    torch_value = torch_loss()
    torch_value.backward()
    torch_value = torch_value.detach()
    torch_norm = float(torch.sqrt(sum((p.grad**2).sum() for p in torch_model.parameters())))
    ok = abs(float(loss) - float(torch_value)) < 1e-4 and abs(grad_norm - torch_norm) / grad_norm < 1e-3
    check(
        f"{name} loss and gradients",
        ok,
        f"loss {float(loss):.6f} vs {float(torch_value):.6f}, grad norm {grad_norm:.6f} vs {torch_norm:.6f}",
    )


def init_scale(name: str, flax_params, torch_model) -> None:
    flax_std = [float(np.std(x)) for x in jax.tree.leaves(flax_params) if np.ndim(x) >= 2]
    torch_std = [float(p.detach().std()) for n, p in torch_model.named_parameters() if p.ndim >= 2]
    counts = (sum(np.size(x) for x in jax.tree.leaves(flax_params)), sum(p.numel() for p in torch_model.parameters()))
    ratios = sorted(t / f for f, t in zip(sorted(flax_std), sorted(torch_std), strict=False))
    ok = counts[0] == counts[1] and len(flax_std) == len(torch_std) and ratios[0] > 0.9 and ratios[-1] < 1.1
    check(
        f"{name} parameters", ok, f"{counts[0]:,} vs {counts[1]:,}; init std ratios {ratios[0]:.3f}..{ratios[-1]:.3f}"
    )


def check_cnn() -> None:
    model = models.CNN(num_classes=10, features=(16, 32), dense=128)
    images, labels = mnist.load("train").arrays["inputs"][:64] / np.float32(255), mnist.load("train").arrays["targets"]
    labels = labels[:64]
    params = model.init(jax.random.key(0), images, train=False)["params"]
    twin = torch_models.CNN()
    init_scale("CNN", params, twin)
    with torch.no_grad():
        for conv, name in zip(twin.convs, ("Conv_0", "Conv_1"), strict=True):
            conv.weight.copy_(to_torch(params[name]["kernel"]).permute(3, 2, 0, 1))  # HWIO -> OIHW
            conv.bias.copy_(to_torch(params[name]["bias"]))
        hidden = to_torch(params["Dense_0"]["kernel"]).reshape(7, 7, 32, 128).permute(2, 0, 1, 3).reshape(-1, 128)
        twin.hidden.weight.copy_(hidden.T)  # rows reordered from (h, w, c) to (c, h, w)
        twin.hidden.bias.copy_(to_torch(params["Dense_0"]["bias"]))
        twin.out.weight.copy_(to_torch(params["Dense_1"]["kernel"]).T)
        twin.out.bias.copy_(to_torch(params["Dense_1"]["bias"]))
    loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply({"params": p}, images, train=True), labels
    ).mean()
    inputs = torch.from_numpy(images).permute(0, 3, 1, 2)
    torch_loss = lambda: torch.nn.functional.cross_entropy(twin(inputs), torch.from_numpy(labels.astype(np.int64)))
    compare("CNN", loss_fn, params, twin, torch_loss)


def check_gpt() -> None:
    config = jaxdl.get_config("shakespeare_gpt_reference")
    train, windows, vocab_size = common.shakespeare_arrays(64, 0.9, 2000, 0)
    corpus = text.read_text(text.default_path())
    vocabulary = text.Vocabulary.from_text(corpus)
    jax_train, jax_validation = text.split_windows(vocabulary.encode(corpus), 64, 0.9, 2000, 0)
    same = np.array_equal(jax_train.tokens, train) and np.array_equal(
        jax_validation.take(np.arange(2000))["inputs"], windows[:, :-1]
    )
    check("tiny-shakespeare split", same, f"{len(train):,} train tokens, 2000 validation windows, {vocab_size} chars")
    model = models.GPT(vocab_size=vocab_size, **config.model)
    tokens = windows[:12]
    params = model.init(jax.random.key(0), tokens[:, :-1], train=False)["params"]
    twin = torch_models.GPT(vocab_size, 64)
    init_scale("GPT", params, twin)
    with torch.no_grad():
        named = dict(twin.named_parameters())
        for path, value in jax.tree_util.tree_leaves_with_path(params):
            name = paths.path_name(path).replace("blocks_", "blocks.").replace("/attn/out", "/attn_out")
            name = name.replace("/attn/", "/").replace("/", ".").replace("kernel", "weight")
            name = name.replace("embedding", "weight").replace("scale", "weight")
            value = to_torch(value)
            named[name].copy_(value.T if name.endswith("weight") and value.ndim == 2 and "embed" not in name else value)
    loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply({"params": p}, tokens[:, :-1], train=True), tokens[:, 1:]
    ).mean()
    batch = torch.from_numpy(tokens)
    torch_loss = lambda: torch.nn.functional.cross_entropy(twin(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
    compare("GPT", loss_fn, params, twin, torch_loss)
    decayed = jax.tree.leaves(jax.tree.map(lambda excluded: not excluded, paths.select(params, config.optim.no_decay)))
    groups = twin.parameter_groups(0.1)
    count = sum(p.numel() for p in groups[0]["params"])
    jax_count = sum(np.size(x) for x, d in zip(jax.tree.leaves(params), decayed, strict=True) if d)
    check("GPT weight-decay groups", count == jax_count, f"{count:,} vs {jax_count:,} decayed parameters")


def check_averages() -> None:
    """The three moving averages the mnist arms evaluate with agree on a sequence of parameter values: jaxdl's, the
    bare loop's (run for a few steps: its average against jaxdl's of the parameters it went through) and torch's."""
    from benchmarks import jax_workers
    from jaxdl.state import TrainState

    def jaxdl_average(sequence: list, decay: float):  # sequence[0]: the initial parameters, then one per update
        state = TrainState(jnp.zeros((), jnp.int32), sequence[0], None, {}, sequence[0])
        for t, params in enumerate(sequence[1:], start=1):
            state = state.replace(step=jnp.asarray(t, jnp.int32), params=params).update_average(decay)
        return state.ema_params

    values = list(np.random.default_rng(0).normal(size=(21, 6)).astype(np.float32))
    for decay in (common.CNN_RECIPE["optim.ema_decay"], 0.5):  # 0.5: past the warm-up, decay itself caps the rate
        module = torch.nn.Module()
        module.weight = torch.nn.Parameter(torch.from_numpy(values[0].copy()))
        averaged = torch_models.parameter_average(module, decay)
        for value in values[1:]:
            module.weight.data.copy_(torch.from_numpy(value))
            averaged.update_parameters(module)
        ours = np.asarray(jaxdl_average(values, decay))
        worst = float(np.abs(averaged.module.weight.detach().numpy() - ours).max())
        check(f"moving average {decay} (torch)", worst < 1e-6, f"max difference {worst:.1e} after 20 updates")

    steps = 12
    train_step, state = jax_workers.bare_train_step(steps)
    train = mnist.load("train").arrays
    sequence = [jax.tree.map(np.asarray, state[0])]  # copied: the step donates the state's buffers
    for i in range(steps):
        rows = slice(64 * i, 64 * (i + 1))
        state, _ = train_step(state, train["inputs"][rows] / np.float32(255), train["targets"][rows])
        sequence.append(jax.tree.map(np.asarray, state[0]))
    expected = jaxdl_average(sequence, common.CNN_RECIPE["optim.ema_decay"])
    pairs = zip(jax.tree.leaves(state[3]), jax.tree.leaves(expected), strict=True)
    worst = max(float(np.abs(a - b).max()) for a, b in pairs)
    check("moving average (bare loop)", worst < 1e-6, f"max difference {worst:.1e} after {steps} steps")


def check_batches() -> None:
    source = mnist.load("train")
    data = jaxdl.data.Dataset(train=source, test=source)
    iterator = jaxdl.data.train_batches(data, source, 128, 0, 0, 1)
    expected = index_batches(len(source), 128, 3, 0)
    same = all(np.array_equal(next(iterator)["targets"], source.arrays["targets"][i]) for i in expected)
    check("index batches", same, "the other arms' index batches gather the examples jaxdl's pipeline yields")


def write_indices(directory: Path) -> None:
    """The index batches both sides train on: mnist_cnn's epochs, shakespeare_gpt_reference's 2000 steps."""
    gpt = common.GPT_RECIPE
    np.save(directory / "mnist.npy", index_batches(60_000, common.CNN_RECIPE["data.batch_size"], common.CNN_STEPS, 0))
    train, _, _ = common.shakespeare_arrays(64, 0.9, 2000, 0)
    np.save(directory / "gpt.npy", index_batches(len(train) - 64, gpt["data.batch_size"], gpt["train.max_steps"], 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--indices", default="", help="write the workers' index batches into this directory")
    parser.add_argument("--indices_only", action="store_true", help="only write them; no checks")
    args = parser.parse_args()
    if args.indices:
        write_indices(Path(args.indices))
    if not args.indices_only:
        for step in (check_recipes, check_schedules, check_cnn, check_gpt, check_averages, check_batches):
            step()
    common.emit({"checks": RESULTS})
    sys.exit(0 if all(RESULTS.values()) else 1)


if __name__ == "__main__":
    main()
