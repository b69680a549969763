"""The MLP and recurrent model families: shapes, parameters, and short real runs of mnist_mlp and mnist_lstm."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl
from jaxdl import models
from jaxdl.errors import UsageError

from conftest import read_metrics


def init_and_apply(model, inputs, **kwargs):
    variables = model.init(jax.random.key(0), inputs, train=False)
    return variables, model.apply(variables, inputs, **{"train": False, **kwargs})


def test_mlp_flattens_its_input_and_has_the_expected_parameters():
    variables, logits = init_and_apply(models.MLP(outputs=10, hidden=(128,)), jnp.ones((5, 28, 28, 1)))
    assert logits.shape == (5, 10)
    assert sum(x.size for x in jax.tree.leaves(variables)) == 784 * 128 + 128 + 128 * 10 + 10  # 784-128-10
    variables, outputs = init_and_apply(models.MLP(outputs=1, hidden=(128, 64)), jnp.ones((7, 10)))
    assert outputs.shape == (7, 1)
    shapes = jax.tree.map(jnp.shape, variables["params"])
    assert [shapes[f"Dense_{i}"]["kernel"] for i in range(3)] == [(10, 128), (128, 64), (64, 1)]
    _, linear = init_and_apply(models.MLP(outputs=3, hidden=()), jnp.ones((2, 4)))  # no hidden layer: linear
    assert linear.shape == (2, 3)


def test_mlp_activation_and_dropout_are_configurable():
    x = jax.random.normal(jax.random.key(1), (4, 6))
    relu = models.MLP(outputs=2, hidden=(16,), activation="relu")
    variables, out_relu = init_and_apply(relu, x)
    out_tanh = models.MLP(outputs=2, hidden=(16,), activation="tanh").apply(variables, x, train=False)
    hidden = x @ variables["params"]["Dense_0"]["kernel"] + variables["params"]["Dense_0"]["bias"]
    head = variables["params"]["Dense_1"]
    np.testing.assert_allclose(out_tanh, jnp.tanh(hidden) @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_relu, nn.relu(hidden) @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-6)
    with pytest.raises(UsageError, match="not an activation"):
        init_and_apply(models.MLP(outputs=2, activation="Dense"), x)
    dropped = models.MLP(outputs=2, hidden=(64,), dropout=0.5)
    variables, evaluation = init_and_apply(dropped, x)
    training = dropped.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(training, evaluation)  # dropout acts while training only
    np.testing.assert_array_equal(dropped.apply(variables, x, train=False), evaluation)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_reads_rows_in_order_with_a_scan(cell):
    model = models.RNNClassifier(num_classes=10, hidden=16, cell=cell)
    images = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
    variables, logits = init_and_apply(model, images)
    assert logits.shape == (3, 10)
    cell_params = jax.tree.leaves(variables["params"][f"{cell}_0"])
    expected = 4 * (28 * 16 + 16 * 16 + 16) if cell == "lstm" else 3 * (28 * 16 + 16 * 16) + 4 * 16
    assert sum(x.size for x in cell_params) == expected
    # One scan over the 28 time steps, not 28 unrolled cell applications.
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, images)
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert len(scans) == 1 and scans[0].params["length"] == 28
    # Order matters: the same rows read bottom-up give other logits.
    assert not np.allclose(model.apply(variables, images[:, ::-1], train=False), logits, atol=1e-4)
    with pytest.raises(UsageError, match="choose one of lstm, gru"):
        init_and_apply(models.RNNClassifier(num_classes=10, cell="rnn"), images)


@pytest.mark.parametrize("experiment", ["mnist_mlp", "mnist_lstm"])
def test_a_short_run_learns(experiment, tmp_path, mnist_available):
    config = jaxdl.get_config(experiment)
    config.data.update(train_examples=640, test_examples=250, batch_size=32, eval_batch_size=100)
    config.train.update(max_steps=40, log_every_steps=4, eval_every_steps=0)
    test = jaxdl.train(config, tmp_path)
    lines = read_metrics(tmp_path)
    train = [m["loss"] for m in lines if m["split"] == "train"]
    assert len(train) == 10 and train[-1] < 0.6 * train[0], train
    assert lines[-1]["split"] == "test" and test["count"] == 250 and test["accuracy"] > 0.3  # chance is 0.1
