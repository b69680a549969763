"""The parameters' moving average (optim.ema_decay): its update, and that evaluation, inference, fine-tuning and
checkpoints use it."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl
from jaxdl import checkpoint, inference, training
from jaxdl import config as config_lib
from jaxdl.errors import UsageError
from jaxdl.state import TrainState

from conftest import tiny_run_config


def test_the_average_moves_by_the_warmed_up_rate_and_keeps_unchanged_parameters_exact():
    params = {"w": jnp.array([1.0, 2.0]), "frozen": jnp.array([0.1, 0.7])}
    state = TrainState.create({"params": params}, optax.sgd(0.1), ema=True)
    moved = state.replace(step=jnp.array(1, jnp.int32), params={**params, "w": jnp.array([3.0, 0.0])})
    averaged = moved.update_average(0.99)
    rate = 1 - 2 / 11  # min(0.99, (1 + 1) / (10 + 1)) at step 1
    np.testing.assert_allclose(averaged.ema_params["w"], [1 + rate * 2, 2 - rate * 2], rtol=1e-6)
    np.testing.assert_array_equal(averaged.ema_params["frozen"], params["frozen"])  # bit-identical
    late = moved.replace(step=jnp.array(10_000, jnp.int32)).update_average(0.99)
    np.testing.assert_allclose(late.ema_params["w"], [1.02, 1.98], rtol=1e-6)  # the full decay, 0.99
    np.testing.assert_array_equal(late.evaluated().params["w"], late.ema_params["w"])
    plain = TrainState.create({"params": params}, optax.sgd(0.1))
    assert plain.ema_params is None and plain.update_average(0.99) is plain and plain.evaluated() is plain


def test_a_decay_outside_zero_to_one_is_refused():
    config = tiny_run_config("mnist_cnn")
    config.optim.ema_decay = 1.0
    with pytest.raises(UsageError, match="ema_decay"):
        config_lib.validate(config)


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory, mnist_available):
    workdir = tmp_path_factory.mktemp("ema")
    config = tiny_run_config("mnist_cnn")
    config.train.max_steps = 12
    config.optim.ema_decay = 0.9
    jaxdl.train(config, workdir)
    return workdir


def raw_state(workdir):
    config = config_lib.load_config(workdir)
    run = training.setup(config)
    store = checkpoint.Checkpoints(workdir / "checkpoints", keep=config.checkpoint.keep)
    state, _ = store.restore(run.abstract_state(), store.latest_step())
    store.close()
    return run, state


def test_the_run_is_tested_loaded_and_fine_tuned_with_the_average(averaged_run):
    run, state = raw_state(averaged_run)
    assert not np.array_equal(state.params["Dense_0"]["kernel"], state.ema_params["Dense_0"]["kernel"])
    eval_step = training.compile_eval_step(run)
    with_average = training.evaluate(run, eval_step, state.evaluated(), run.test_source)
    without = training.evaluate(run, eval_step, state, run.test_source)
    assert with_average["loss"] != without["loss"]
    lines = [json.loads(line) for line in (averaged_run / "metrics.jsonl").read_text().splitlines()]
    test = next(line for line in lines if line["split"] == "test")
    assert test["loss"] == pytest.approx(with_average["loss"], rel=1e-6)
    # jaxdl.load, --mode=eval and compress (inference.restore), and init.from (checkpoint.read_variables)
    loaded = jaxdl.load(averaged_run)
    jax.tree.map(np.testing.assert_array_equal, loaded.params, jax.device_get(state.ema_params))
    variables = checkpoint.read_variables(averaged_run, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    jax.tree.map(np.testing.assert_array_equal, variables["params"], jax.device_get(state.ema_params))


def test_resuming_with_a_different_averaging_setting_is_bad_input(averaged_run):
    config = config_lib.load_config(averaged_run)
    config.optim.ema_decay = 0.0
    config.train.max_steps = 14
    with pytest.raises(UsageError, match=r"moving average.*ema_decay"):
        jaxdl.train(config, averaged_run)
    assert sorted(p.name for p in (averaged_run / "checkpoints").iterdir() if p.name.isdigit()) == ["12"]


def test_without_an_average_a_checkpoint_holds_the_arrays_it_always_did(tmp_path, mnist_available):
    config = tiny_run_config("mnist_cnn")
    config.optim.ema_decay = 0.0
    jaxdl.train(config, tmp_path)
    step_dir = checkpoint.step_directory(tmp_path)
    metadata = checkpoint.read_state_metadata(step_dir)
    names = {str(path[0].key) for path, _ in jax.tree_util.tree_leaves_with_path(metadata)}
    assert names == {"step", "params", "opt_state"}  # model_state is empty for this CNN; no ema_params
    _, state, _ = inference.restore(config_lib.load_config(tmp_path), tmp_path)
    assert state.ema_params is None
