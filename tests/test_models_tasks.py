import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from jaxdl import models, optim, tasks
from jaxdl.config import default_config
from jaxdl.errors import UsageError
from jaxdl.models import cnn
from jaxdl.state import TrainState


def test_cnn_shapes_and_parameter_count():
    model = models.CNN(num_classes=10, features=(8, 16), dense=32, batch_norm=True)
    variables = model.init(jax.random.key(0), jnp.zeros((2, 28, 28, 1)), train=False)
    logits = model.apply(variables, jnp.ones((5, 28, 28, 1)), train=False)
    assert logits.shape == (5, 10) and logits.dtype == jnp.float32
    params = variables["params"]
    count = sum(x.size for x in jax.tree.leaves(params))
    # conv 3x3x1x8 + conv 3x3x8x16 (no biases under batch norm) + BN scales/biases + 7*7*16->32 dense + 32->10 dense
    expected = 72 + 1152 + 2 * (8 + 16) + (784 * 32 + 32) + (32 * 10 + 10)
    assert count == expected
    assert set(variables) == {"params", "batch_stats"}


def test_cnn_computes_in_bfloat16_when_asked():
    model = models.CNN(num_classes=10, features=(4,), dense=0, dtype=jnp.bfloat16)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
    assert model.apply(variables, jnp.ones((2, 28, 28, 1)), train=False).dtype == jnp.bfloat16
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables["params"]))


def _conv2d(x, kernel, strides, padding):
    """jaxdl's convolution as nn.Conv calls it."""
    numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, cnn.NHWC)
    return cnn.conv2d(x, kernel, strides, padding, dimension_numbers=numbers)


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((2, 0), (1, 3))])
def test_single_channel_conv_matches_xla_values_and_gradients(padding):
    x = jax.random.uniform(jax.random.key(0), (3, 9, 8, 1))
    kernel = jax.random.normal(jax.random.key(1), (3, 2, 1, 5))
    xla = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=cnn.NHWC)
    ours = lambda x, k: _conv2d(x, k, (1, 1), padding)
    np.testing.assert_allclose(ours(x, kernel), xla(x, kernel), rtol=1e-5, atol=1e-6)
    # the fast path really ran: the forward program has no convolution in it
    assert "convolution" not in jax.jit(ours).lower(x, kernel).as_text()
    loss = lambda conv: lambda x, k: jnp.sum(jnp.sin(conv(x, k)))
    expected = jax.grad(loss(xla), (0, 1))(x, kernel)
    got = jax.grad(loss(ours), (0, 1))(x, kernel)
    for g, e in zip(got, expected, strict=True):  # the input's gradient and the kernel's
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels,strides", [(3, (1, 1)), (1, (2, 2))])
def test_conv2d_leaves_other_convolutions_to_xla(channels, strides):
    x, kernel = jnp.ones((2, 8, 8, channels)), jnp.ones((3, 3, channels, 4))
    assert "convolution" in jax.jit(lambda x, k: _conv2d(x, k, strides, "SAME")).lower(x, kernel).as_text()


def test_classification_loss_is_cross_entropy():
    task = tasks.Classification(num_classes=3)
    logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    batch = {"targets": jnp.array([0, 2])}
    expected = -np.log(np.exp(2.0) / (np.exp(2.0) + 1 + np.exp(-1.0))), np.log(3.0)
    np.testing.assert_allclose(task.loss(logits, batch), expected, rtol=1e-6)
    smoothed = tasks.Classification(num_classes=3, label_smoothing=0.3).loss(logits, batch)
    assert smoothed[0] > expected[0]  # smoothing penalises a confident correct answer
    np.testing.assert_allclose(smoothed[1], np.log(3.0), rtol=1e-6)  # and leaves a uniform one unchanged


def test_eval_sums_ignore_masked_examples_and_summarize_to_known_values():
    task = tasks.Classification(num_classes=2)
    # predictions: 0, 0, 1, 1, 1 (last one masked) ; labels: 0, 1, 1, 1, 0
    logits = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 9.0]])
    batch = {"targets": jnp.array([0, 1, 1, 1, 0]), "mask": jnp.array([True, True, True, True, False])}
    sums = jax.device_get(task.eval_sums(logits, batch))
    assert int(sums["count"]) == 4
    np.testing.assert_array_equal(sums["confusion"], [[1, 0], [1, 2]])
    metrics = task.summarize(sums)
    assert metrics["accuracy"] == pytest.approx(0.75)
    # class 0: precision 1/2, recall 1 -> F1 2/3; class 1: precision 1, recall 2/3 -> F1 0.8
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits[:4], batch["targets"][:4])
    assert metrics["loss"] == pytest.approx(float(per_example.mean()), rel=1e-6)


def test_standard_train_step_reduces_the_loss_and_updates_batch_stats():
    model = models.CNN(num_classes=10, features=(4,), dense=16, batch_norm=True)
    task = tasks.Classification(num_classes=10)
    rng = np.random.default_rng(0)
    batch = {"inputs": rng.random((16, 28, 28, 1), np.float32), "targets": rng.integers(0, 10, 16)}
    tx = optax.adam(1e-2)
    state = TrainState.create(task.init(model, jax.random.key(0), batch), tx)
    step = jax.jit(lambda s, b, r: task.train_step(model, tx, s, b, r))
    first_stats = state.model_state["batch_stats"]
    losses = []
    for _ in range(20):
        state, metrics = step(state, batch, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 20
    assert losses[-1] < 0.5 * losses[0]
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), first_stats, state.model_state["batch_stats"])
    assert all(jax.tree.leaves(moved))


def test_the_gradient_norm_is_reported_only_when_asked():
    model = models.CNN(num_classes=10, features=(4,), dense=16)
    task = tasks.Classification(num_classes=10)
    rng = np.random.default_rng(0)
    batch = {"inputs": rng.random((8, 28, 28, 1), np.float32), "targets": rng.integers(0, 10, 8)}
    state = TrainState.create(task.init(model, jax.random.key(0), batch), optax.sgd(0.1))
    loss = lambda params: task.loss(model.apply({"params": params}, batch["inputs"], train=True), batch).mean()
    expected = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(jax.grad(loss)(state.params)))))
    _, quiet = task.train_step(model, optax.sgd(0.1), state, batch, jax.random.key(1))
    _, asked = task.train_step(model, optax.sgd(0.1), state, batch, jax.random.key(1), grad_norm=True)
    assert "grad_norm" not in quiet and float(quiet["loss"]) == float(asked["loss"])
    assert float(asked["grad_norm"]) == pytest.approx(expected, rel=1e-5) and expected > 0


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("schedule", ["constant", "cosine", "warmup_cosine", "onecycle"])
def test_every_optimizer_and_schedule_builds_and_steps(name, schedule):
    config = default_config().optim
    config.update(name=name, schedule=schedule, warmup_steps=2, grad_clip_norm=1.0, weight_decay=1e-4)
    tx = optim.build_optimizer(config, total_steps=10)
    params = {"w": jnp.ones(3)}
    opt_state = tx.init(params)
    for _ in range(3):  # warmup starts from a learning rate of 0
        updates, opt_state = tx.update({"w": jnp.ones(3)}, opt_state, params)
        params = optax.apply_updates(params, updates)
    assert jnp.all(jnp.isfinite(updates["w"])) and jnp.all(updates["w"] < 0)


def test_unknown_optimizer_is_a_usage_error():
    config = default_config().optim
    config.name = "adamm"
    with pytest.raises(UsageError, match="choose one of"):
        optim.build_optimizer(config, 10)
