"""The jax side of each comparison, one arm per process: `python -m benchmarks.jax_workers ARM [--steps N] ...`.

The jaxdl arms run `jaxdl.train` (the framework as users run it) with a thin probe around it that only observes
(`benchmarks/probe.py`). The `bare` arm is a minimal hand-written jax.jit loop.
"""

import argparse
import functools
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import jaxdl
from benchmarks import common, measures
from benchmarks.probe import Probe
from jaxdl import compiler, flops, sharding, training
from jaxdl import data as data_lib
from jaxdl.models import cnn

NEVER = 10**9  # an interval (eval, checkpoint) no run reaches


def _loop_config(steps: int):
    config = jaxdl.get_config("mnist_cnn")
    config.train.update(max_steps=steps, eval_every_steps=NEVER)
    config.checkpoint.every_steps = NEVER
    config.data.test_examples = 500  # the final test pass is not timed; keep it short
    return config


def _result(probe: Probe, **extra) -> dict:
    return {
        "train_stamps": probe.train_stamps,
        "main_cpu_stamps": probe.main_cpu_stamps,
        "evals": probe.evals,
        "eval_seconds": probe.eval_seconds,
        "data_seconds": probe.data_seconds,
        "step_flops": probe.step_flops,
        "saves": probe.saves,
        "process_seconds": common.since_start(),
        **extra,
    }


def loop_run(args) -> dict:
    """jaxdl's loop on mnist_cnn for `steps` steps, no evaluation, no checkpoint before the end."""
    probe = Probe(synthetic=args.synthetic)
    with tempfile.TemporaryDirectory() as workdir:
        probe.train(_loop_config(args.steps), Path(workdir))
        losses = [r for r in _read_metrics(Path(workdir)) if r["split"] == "train"]
    # Data waiting is counted over the stamped span only, like the steps/s.
    return _result(probe, last_train_loss=losses[-1]["loss"])


def arm_loop(args) -> dict:
    """`loop_run`, and the model's FLOPs (compiled after the timed run)."""
    return {**loop_run(args), "model_flops": model_flops(_loop_config(args.steps))}


def model_flops(config) -> float:
    """XLA's FLOP count of jaxdl's train step for `config` with every convolution XLA's own: the model's FLOPs,
    the MFU numerator. XLA counts jaxdl's one-channel convolution (jaxdl.models.cnn.conv2d) as the elementwise ops
    of each fusion that recomputes it, 6% more for mnist_cnn. Compiled after the timed run."""
    jaxdl_conv, cnn.conv2d = cnn.conv2d, lax.conv_general_dilated
    try:
        run = training.setup(config)
        batch = run.experiment.data.preprocess(run.train_source.take(np.arange(config.data.batch_size)))
        step = training.compile_train_step(run, batch, jax.random.key(0))
        return flops.step_flops(step, run.mesh)
    finally:
        cnn.conv2d = jaxdl_conv


def _read_metrics(workdir: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def bare_train_step(steps: int, default_xla: bool = False) -> tuple:
    """The bare loop's train step, a minimal hand-written jax.jit of mnist_cnn's model, augmentation and optimizer
    (one-cycle Adam over `steps` steps), and its initial state. Compiled with jaxdl's compiler options
    (jaxdl.compiler), so that jaxdl / bare measures the loop alone; `default_xla`: XLA's defaults instead, as a
    hand-written loop would be."""
    from jaxdl.data import augment
    from jaxdl.models import CNN

    config = jaxdl.get_config("mnist_cnn")
    model = CNN(num_classes=10, **config.model)
    init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
    params = model.init({"params": init_rng, "dropout": init_rng}, np.zeros((1, 28, 28, 1), np.float32), train=False)
    recipe = common.CNN_RECIPE
    schedule = optax.cosine_onecycle_schedule(
        steps,
        recipe["optim.learning_rate"],
        pct_start=recipe["optim.onecycle_pct_start"],
        final_div_factor=recipe["optim.onecycle_final_div"],
    )
    tx = optax.adam(schedule)
    decay = recipe["optim.ema_decay"]  # the parameters' moving average, which the evaluations use
    average = jax.tree.map(jnp.copy, params["params"]) if decay else None
    state = (params["params"], tx.init(params["params"]), jnp.zeros((), jnp.int32), average)

    @functools.partial(jax.jit, donate_argnums=0, compiler_options={} if default_xla else compiler.options())
    def train_step(state, inputs, targets):
        params, opt_state, step, average = state
        key = jax.random.fold_in(jax.random.fold_in(step_rng, step), 1)
        inputs = augment.random_shift({"inputs": inputs}, key, max_shift=1)["inputs"]

        def loss_fn(params):
            logits = model.apply({"params": params}, inputs, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if decay:  # TensorFlow's warmed-up decay, as jaxdl's
            rate = 1.0 - jnp.minimum(decay, (2.0 + step) / (11.0 + step))
            average = jax.tree.map(lambda p, a: a + rate * (p - a), params, average)
        return (params, opt_state, step + 1, average), loss

    return train_step, state


def arm_bare(args) -> dict:
    """The bare loop (`bare_train_step`) over the suite's batches: no logging, a timestamp every 50 steps."""
    from jaxdl.data import mnist

    train = mnist.load("train").arrays
    images, labels = train["inputs"], train["targets"]
    batches = np.load(args.indices)[: args.steps]
    train_step, state = bare_train_step(args.steps, args.default_xla)
    batch = lambda i: (images[batches[i]] / np.float32(255), labels[batches[i]])
    step_flops = flops.compiled_flops(train_step.lower(state, *batch(0)).compile())
    losses, stamps, cpu_stamps = [], [], []
    for i in range(args.steps):
        state, loss = train_step(state, *batch(i))
        losses.append(loss)
        if (i + 1) % 50 == 0 or i + 1 == args.steps:  # timestamps only; the loop itself never waits
            jax.block_until_ready(loss)
            stamps.append((i + 1, time.perf_counter(), 0.0))
            cpu_stamps.append((i + 1, time.thread_time()))
    last = float(np.mean(jax.device_get(losses[-50:])))
    return {"train_stamps": stamps, "main_cpu_stamps": cpu_stamps, "step_flops": step_flops, "last_train_loss": last}


def arm_steps(args) -> dict:
    """jaxdl's compiled mnist_cnn train step and the bare loop's, interleaved in one process on the same ten
    device-resident batches: `rounds` rounds of `steps` steps of each, in alternating order. The step's share of
    the framework tax (benchmark 1s), free of the drift between processes; the rest of figure 1 is the loop's."""
    config = _loop_config(args.steps * args.rounds)
    run = training.setup(config)
    data, batch_size = run.experiment.data, config.data.batch_size
    source = data_lib.train_batches(data, run.train_source, batch_size, config.seed, 0, 1, prefetch=0)
    on_device = sharding.batch_sharding(run.mesh)
    batches = [jax.device_put(sharding.global_batch(next(source), run.mesh), on_device) for _ in range(10)]
    rng = jax.random.key(config.seed)
    jaxdl_step = training.compile_train_step(run, batches[0], rng)
    bare_step, bare_state = bare_train_step(args.steps * args.rounds)
    steps = {
        "jaxdl": lambda state, batch: jaxdl_step(state, batch, rng),
        "bare": lambda state, batch: bare_step(state, batch["inputs"], batch["targets"]),
    }
    states = {"jaxdl": training.initial_state(run, rng), "bare": bare_state}
    seconds = {name: [] for name in steps}
    for round_ in range(args.rounds + 1):  # round 0 compiles and warms up, untimed
        for name in list(steps) if round_ % 2 == 0 else reversed(steps):
            state, start = states[name], time.perf_counter()
            for i in range(args.steps):
                state, outputs = steps[name](state, batches[i % len(batches)])
            jax.block_until_ready(outputs)
            states[name] = state
            if round_:
                seconds[name].append((time.perf_counter() - start) / args.steps)
    return {"seconds_per_step": seconds}


def arm_loops(args) -> dict:
    """The `loop` and `bare` arms alternated in one process: `rounds` rounds of one run of each, in alternating
    order; each run's steady steps/s. Figure 1 without the drift between processes that the separate arms see
    (benchmark 1l). jaxdl's runs compile their programs anew each time, as a new run does."""
    arms = {"jaxdl": loop_run, "bare": arm_bare}
    rates = {name: [] for name in arms}
    for round_ in range(args.rounds):
        for name in list(arms) if round_ % 2 == 0 else reversed(arms):
            rates[name].append(measures.rate(arms[name](args)))
    return {"steps_per_sec": rates}


def use_cache(directory: str) -> None:
    """The command line's cache of compiled programs in `directory`; "fresh": a new, empty one (a first run)."""
    if directory:
        compiler.use_compilation_cache(tempfile.mkdtemp(prefix="xla-") if directory == "fresh" else directory)


def arm_mnist_tta(args) -> dict:
    """The default mnist_cnn run, evaluated on the test set every `eval_every` steps, until 99.2% (or the end)."""
    use_cache(args.compilation_cache)
    config = jaxdl.get_config("mnist_cnn")
    config.train.eval_every_steps = args.eval_every
    if args.steps:
        config.train.max_steps = args.steps
    probe = Probe(stop_when=lambda m: m["accuracy"] >= max(common.MNIST_TARGETS))
    with tempfile.TemporaryDirectory() as workdir:
        stopped = probe.train(config, Path(workdir))
    return _result(probe, stopped_early=stopped)


def arm_gpt(args) -> dict:
    """shakespeare_gpt_reference as configured, until the validation loss reaches the target (or the end)."""
    use_cache(args.compilation_cache)
    config = jaxdl.get_config("shakespeare_gpt_reference")
    config.matmul_dtype = args.matmul_dtype
    if args.steps:
        config.train.update(max_steps=args.steps, eval_every_steps=args.eval_every)
    probe = Probe(stop_when=lambda m: m["loss"] <= common.GPT_TARGET_LOSS)
    with tempfile.TemporaryDirectory() as workdir:
        stopped = probe.train(config, Path(workdir))
    tokens = config.data.batch_size * config.model.context
    return _result(probe, stopped_early=stopped, tokens_per_step=tokens)


def arm_checkpoint(args) -> dict:
    """mnist_cnn for `epochs` epochs with a checkpoint every epoch, or none before the final one."""
    config = jaxdl.get_config("mnist_cnn")
    config.train.update(num_epochs=args.epochs, eval_every_steps=NEVER)
    config.data.test_examples = 500
    config.checkpoint.every_steps = 0 if args.checkpoints else NEVER
    if args.steps:
        config.train.max_steps = args.steps
        config.checkpoint.every_steps = args.steps // args.epochs if args.checkpoints else NEVER
    probe = Probe()
    with tempfile.TemporaryDirectory() as workdir:
        probe.train(config, Path(workdir))
    return _result(probe)


def arm_peak(args) -> dict:
    """Best-of FLOP/s of a 2048x2048 matmul, float32 (the MFU denominator) and bfloat16 operands with float32 sums
    (for reference: what matmul_dtype=bfloat16 runs)."""
    flops.measured_peak_flops.cache_clear()
    fp32 = flops.measured_peak_flops("float32", 2048, args.repeats)
    bf16 = flops.measured_peak_flops("bfloat16", 2048, args.repeats)
    return {"fp32_flops": fp32, "bf16_flops": bf16, "devices": [str(d) for d in jax.devices()]}


ARMS = {
    "loop": arm_loop,
    "bare": arm_bare,
    "steps": arm_steps,
    "loops": arm_loops,
    "mnist_tta": arm_mnist_tta,
    "gpt": arm_gpt,
    "checkpoint": arm_checkpoint,
    "peak": arm_peak,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arm", choices=sorted(ARMS))
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--eval_every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=30, help="steps, loops: interleaved rounds")
    parser.add_argument("--indices", default="")
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--checkpoints", action="store_true")
    parser.add_argument("--default_xla", action="store_true", help="bare: XLA's default compiler options")
    parser.add_argument("--compilation_cache", default="", help="mnist_tta, gpt: a cache directory, or 'fresh'")
    parser.add_argument("--matmul_dtype", default="", help="gpt: config.matmul_dtype (bfloat16: mixed precision)")
    args = parser.parse_args()
    common.emit(ARMS[args.arm](args))


if __name__ == "__main__":
    main()
