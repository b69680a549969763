"""Training techniques: L1 penalty, step schedule, rotations, early stopping with the best checkpoint, compression."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import jaxdl
from jaxdl import compress, optim
from jaxdl.checkpoint import BestCheckpoint
from jaxdl.data import augment
from jaxdl.early_stopping import EarlyStopping, resolve_mode
from jaxdl.training import compile_eval_step, evaluate, setup

from conftest import read_metrics, run_cli, tiny_run_config


def optim_config(**overrides) -> ml_collections.ConfigDict:
    config = jaxdl.default_config().optim
    config.update(overrides)
    return config


# --- optimizer pieces -------------------------------------------------------------------------------------------


def test_step_schedule_multiplies_the_rate_by_the_factor_every_n_steps():
    schedule = optim.learning_rate_schedule(
        optim_config(schedule="step", learning_rate=0.1, step_every_steps=10, step_factor=0.5), total_steps=100
    )
    for step in (0, 1, 9, 10, 11, 19, 20, 35, 99):
        assert float(schedule(step)) == pytest.approx(0.1 * 0.5 ** (step // 10), rel=1e-6)


def test_l1_adds_its_sign_gradient_to_weights_but_not_to_exempt_parameters():
    params = {"Dense_0": {"kernel": jnp.array([[0.5, -2.0], [0.0, 3.0]]), "bias": jnp.array([1.0, -1.0])}}
    tx = optim.build_optimizer(optim_config(name="sgd", learning_rate=1.0, l1=0.01), total_steps=10)
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    # sgd's update is -lr * gradient; the kernel's gradient is l1 * sign(w), the bias (optim.no_decay) gets nothing
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], -0.01 * np.sign(params["Dense_0"]["kernel"]))
    np.testing.assert_array_equal(updates["Dense_0"]["bias"], 0.0)


def test_l1_drives_weights_towards_zero_compared_with_none():
    rng = np.random.default_rng(0)
    x, y = jnp.asarray(rng.normal(size=(64, 8))), jnp.asarray(rng.normal(size=(64, 1)))
    initial = {"kernel": jnp.asarray(rng.normal(size=(8, 1))), "bias": jnp.zeros(1)}
    loss = lambda p: jnp.mean((x @ p["kernel"] + p["bias"] - y) ** 2)

    def train(l1: float):
        tx = optim.build_optimizer(optim_config(name="adam", learning_rate=0.05, l1=l1), total_steps=30)
        params, state = initial, tx.init(initial)
        for _ in range(30):
            updates, state = tx.update(jax.grad(loss)(params), state, params)
            params = optax.apply_updates(params, updates)
        return params

    plain, sparse = train(0.0), train(0.5)
    assert float(jnp.abs(sparse["kernel"]).sum()) < 0.8 * float(jnp.abs(plain["kernel"]).sum())
    assert float(loss(sparse)) > float(loss(plain))  # the penalty traded fit for smaller weights


# --- augmentation -----------------------------------------------------------------------------------------------


def digit_batch():
    """Eight MNIST-like images: a bright blob away from the border, as digits are."""
    rng = np.random.default_rng(1)
    images = np.zeros((8, 28, 28, 1), np.float32)
    images[:, 8:20, 10:18] = rng.uniform(0.5, 1.0, size=(8, 12, 8, 1))
    return {"inputs": jnp.asarray(images), "targets": jnp.arange(8)}


def test_rotation_is_deterministic_per_key_changes_images_and_keeps_shape_and_mass():
    batch = digit_batch()
    rotate = jax.jit(lambda b, k: augment.random_rotation(b, k, max_degrees=15.0))
    first, again = rotate(batch, jax.random.key(3)), rotate(batch, jax.random.key(3))
    other = rotate(batch, jax.random.key(4))
    np.testing.assert_array_equal(first["inputs"], again["inputs"])
    assert not np.allclose(first["inputs"], other["inputs"])
    assert not np.allclose(first["inputs"], batch["inputs"])
    assert first["inputs"].shape == batch["inputs"].shape and first["inputs"].dtype == batch["inputs"].dtype
    np.testing.assert_array_equal(first["targets"], batch["targets"])
    mass = lambda images: np.asarray(images).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(mass(first["inputs"]), mass(batch["inputs"]), rtol=0.03)


def test_affine_warp_by_a_right_angle_is_an_exact_rotation():
    image = jnp.asarray(np.random.default_rng(2).random((9, 9, 3)), jnp.float32)
    quarter_turn = jnp.array([[0.0, -1.0], [1.0, 0.0]])
    np.testing.assert_allclose(augment.affine_warp(image, quarter_turn, jnp.zeros(2)), np.rot90(image, -1), atol=1e-6)


def test_affine_with_shifts_and_chain_are_seeded():
    batch = digit_batch()
    both = augment.chain(
        lambda b, k: augment.random_affine(b, k, max_degrees=10.0, max_shift=2.0, max_scale=0.1),
        lambda b, k: augment.random_shift(b, k, max_shift=1),
    )
    a, b = both(batch, jax.random.key(0)), both(batch, jax.random.key(0))
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    assert not np.allclose(a["inputs"], both(batch, jax.random.key(1))["inputs"])


# --- early stopping ---------------------------------------------------------------------------------------------


def test_early_stopping_decision_on_a_scripted_sequence():
    decision = EarlyStopping("accuracy", mode="max", patience=2, min_delta=0.01)
    values = [0.50, 0.60, 0.605, 0.70, 0.705, 0.71, 0.90]  # 0.605 and 0.705/0.71 are within min_delta
    improved = [decision.update(step, value) for step, value in enumerate(values[:6], start=1)]
    assert improved == [True, True, False, True, False, False]
    assert decision.stopped and decision.stopped_at == 6
    assert (decision.best_step, decision.best_value) == (4, 0.70)

    losses = EarlyStopping("loss", mode=resolve_mode("loss", "auto"), patience=1)
    assert [losses.update(s, v) for s, v in enumerate([float("nan"), 2.0, 1.0, 1.0], 1)] == [False, True, True, False]
    assert losses.stopped_at == 4 and losses.best_step == 3

    restored = EarlyStopping("accuracy", mode="max", patience=2, min_delta=0.01)
    restored.load_state_dict(json.loads(json.dumps(decision.state_dict())))  # through JSON, as in a checkpoint
    assert restored == decision
    other_metric = EarlyStopping("loss", mode="min", patience=2)
    other_metric.load_state_dict(decision.state_dict())  # another metric's history does not carry over
    assert other_metric.best_value is None and not other_metric.stopped
    assert resolve_mode("accuracy", "auto") == "max" and resolve_mode("perplexity", "auto") == "min"


def early_stopping_config(max_steps: int):
    config = tiny_run_config("mnist_cnn")
    config.train.update(max_steps=max_steps, eval_every_steps=2, early_stopping_metric="loss", patience=2)
    config.data.validation_size = 128
    config.checkpoint.every_steps = 5
    config.optim.update(schedule="constant", learning_rate=0.03)  # noisy on purpose: the validation loss wobbles
    config.optim.ema_decay = 0.0  # evaluating the raw parameters: mnist_cnn's moving average smooths the wobble away
    return config


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, mnist_available):
    workdir = tmp_path_factory.mktemp("early_stopping")
    test = jaxdl.train(early_stopping_config(max_steps=60), workdir)
    return workdir, test


def test_a_run_stops_early_and_tests_its_best_checkpoint(stopped_run):
    workdir, test = stopped_run
    lines = read_metrics(workdir)
    evals = [m for m in lines if m["split"] == "eval"]
    replay = EarlyStopping("loss", mode="min", patience=2)
    for m in evals:
        replay.update(m["step"], m["loss"])
    assert replay.stopped and evals[-1]["step"] == replay.stopped_at < 60  # stopped at exactly that evaluation
    assert max(m["step"] for m in lines if m["split"] == "train") == replay.stopped_at
    assert test["checkpoint_step"] == replay.best_step
    assert [p.name for p in (workdir / "best").iterdir() if p.name.isdigit()] == [str(replay.best_step)]

    # The final test is the best checkpoint's: evaluating that checkpoint independently gives the same numbers.
    run = setup(early_stopping_config(max_steps=60))
    best = BestCheckpoint(workdir / "best", "loss", "min")
    state = best.restore(run.abstract_state(), replay.best_step)
    best.close()
    assert int(state.step) == replay.best_step
    assert evaluate(run, compile_eval_step(run), state, run.test_source) == {
        k: v for k, v in test.items() if k != "checkpoint_step"
    }


def test_resuming_a_run_that_stopped_early_trains_no_further(stopped_run):
    workdir, test = stopped_run
    before = [m for m in read_metrics(workdir) if m["split"] == "train"]
    again = jaxdl.train(early_stopping_config(max_steps=80), workdir)
    assert [m for m in read_metrics(workdir) if m["split"] == "train"] == before
    assert again == test


def test_early_stopping_on_the_test_split_or_an_unknown_metric_is_refused(tmp_path, mnist_available):
    config = early_stopping_config(max_steps=4)
    config.data.validation_size = 0
    with pytest.raises(jaxdl.UsageError, match="validation"):
        jaxdl.train(config, tmp_path / "a")
    config = early_stopping_config(max_steps=4)
    config.train.early_stopping_metric = "acuracy"
    with pytest.raises(jaxdl.UsageError, match="reports loss, accuracy"):
        jaxdl.train(config, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --- compression ------------------------------------------------------------------------------------------------


def test_int8_dequantised_weights_are_within_half_a_step_per_channel():
    weight = np.random.default_rng(0).normal(size=(3, 3, 8, 16)).astype(np.float32) * np.linspace(0.01, 2, 16)
    values, scale = compress.quantize(weight)
    assert values.dtype == np.int8 and scale.shape == (16,)
    np.testing.assert_allclose(scale, np.abs(weight).max(axis=(0, 1, 2)) / 127, rtol=1e-6)
    error = np.abs(compress.dequantize(values, scale) - weight)
    assert np.all(error <= scale / 2 + 1e-7)


@pytest.mark.parametrize("scope", ["global", "per_layer"])
def test_pruning_reaches_the_requested_sparsity_and_keeps_the_largest_weights(scope):
    rng = np.random.default_rng(0)
    params = {
        "a": {"kernel": rng.normal(size=(40, 30)), "bias": rng.normal(size=30)},
        "b": {"kernel": rng.normal(size=(30, 7)) * 5},
    }
    pruned = compress.prune(params, 0.7, scope)
    np.testing.assert_array_equal(pruned["a"]["bias"], params["a"]["bias"])  # 1-D parameters are never pruned
    assert compress.sparsity_of(pruned) == pytest.approx(0.7, abs=1 / 1410)
    kept = lambda name: np.abs(params[name]["kernel"])[pruned[name]["kernel"] != 0]
    dropped = lambda name: np.abs(params[name]["kernel"])[pruned[name]["kernel"] == 0]
    if scope == "global":
        assert kept("a").min() > max(dropped("a").max(), dropped("b").max())
        assert np.count_nonzero(pruned["b"]["kernel"]) > 0.3 * 210  # the layer of large weights loses less
    else:
        for name, size in (("a", 1200), ("b", 210)):
            assert np.count_nonzero(pruned[name]["kernel"]) == size - int(0.7 * size)


def test_compress_a_trained_run_reports_sizes_and_accuracy(stopped_run):
    workdir, _ = stopped_run
    config = jaxdl.config.load_config(workdir)
    config.compress.sparsity = 0.5
    report = compress.compress(config, workdir)
    variants = report["variants"]
    run = setup(config)
    shapes = jax.tree.leaves(run.state_shapes.params)
    weights = [s for s in shapes if len(s.shape) >= 2]
    total, weight_count = sum(s.size for s in shapes), sum(s.size for s in weights)
    assert variants["original"]["bytes"] == 4 * total
    assert variants["int8"]["bytes"] == weight_count + 4 * (total - weight_count) + 4 * sum(
        s.shape[-1] for s in weights
    )
    assert variants["pruned"]["sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert variants["pruned+int8"]["bytes"] < variants["pruned"]["bytes"] < variants["original"]["bytes"]
    assert variants["int8"]["bytes"] < variants["original"]["bytes"] / 3.5
    assert abs(variants["int8"]["accuracy"] - variants["original"]["accuracy"]) <= 0.02
    assert json.loads((workdir / "compressed" / "report.json").read_text()) == report

    loaded = compress.load(workdir / "compressed" / "int8")
    _, state, _ = jaxdl.inference.restore(config, workdir)
    for original, restored in zip(jax.tree.leaves(state.params), jax.tree.leaves(loaded["params"]), strict=True):
        scale = np.abs(np.asarray(original)).reshape(-1, original.shape[-1]).max(0) / 127 if original.ndim >= 2 else 0
        assert np.all(np.abs(np.asarray(restored) - np.asarray(original)) <= scale / 2 + 1e-7)


def test_compress_from_the_command_line(stopped_run):
    workdir, _ = stopped_run
    result = run_cli("--experiment=mnist_cnn", f"--workdir={workdir}", "--mode=compress")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pruned+int8" in result.stdout and (workdir / "compressed" / "pruned_int8").is_dir()


def test_train_grad_norm_puts_the_gradient_norm_in_the_train_lines(tmp_path, mnist_available):
    config = tiny_run_config("mnist_cnn")
    config.train.update(max_steps=2, grad_norm=True)
    jaxdl.train(config, tmp_path / "asked")
    train_lines = [m for m in read_metrics(tmp_path / "asked") if m["split"] == "train"]
    assert len(train_lines) == 2 and all(m["grad_norm"] > 0 for m in train_lines)
    config.train.grad_norm = False  # the default: no norm, no extra pass over the gradients
    jaxdl.train(config, tmp_path / "default")
    assert not any("grad_norm" in m for m in read_metrics(tmp_path / "default"))
