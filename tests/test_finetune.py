"""Fine-tuning: partial restore by path, frozen parameters, discriminative rates, LoRA and its merge."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_sharding import params_of

import jaxdl
from jaxdl import config as config_lib
from jaxdl import finetune, inference, models, optim, training
from jaxdl.errors import UsageError
from jaxdl.lora import LoRA

from conftest import QUICK, run_cli, tiny_run_config


def test_merge_pretrained_loads_matching_paths_keeps_skipped_ones_fresh_and_lists_mismatches():
    fresh = {"params": {"body": {"w": jnp.zeros(3)}, "head": {"w": jnp.zeros((3, 2))}}}
    loaded = {"params": {"body": {"w": jnp.ones(3)}, "head": {"w": jnp.ones((3, 5))}}}
    merged, report = finetune.merge_pretrained(fresh, loaded, skip=("head/*",))
    np.testing.assert_array_equal(merged["params"]["body"]["w"], np.ones(3))
    np.testing.assert_array_equal(merged["params"]["head"]["w"], np.zeros((3, 2)))
    assert sorted(status for _, status, _ in report) == ["loaded", "skipped"]
    with pytest.raises(UsageError, match=r"params/head/w has shape \(3, 5\) in the checkpoint, \(3, 2\) here"):
        finetune.merge_pretrained(fresh, loaded, skip=())
    extra = {"params": {**loaded["params"], "old": {"w": jnp.ones(1)}}}
    with pytest.raises(UsageError, match="params/old/w is in the checkpoint but not in this model"):
        finetune.merge_pretrained(fresh, extra, skip=("head/*",))
    with pytest.raises(UsageError, match="params/head/w is not in the checkpoint"):
        finetune.merge_pretrained(fresh, {"params": {"body": loaded["params"]["body"]}}, skip=())


def test_frozen_parameters_get_zero_updates_and_no_optimizer_state():
    config = jaxdl.default_config().optim
    params = {"body": {"kernel": jnp.ones((4, 4))}, "head": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)}}
    tx = optim.build_optimizer(config, 10, trainable=("head/*",))
    opt_state = tx.init(params)
    state_sizes = sum(x.size for x in jax.tree.leaves(opt_state) if hasattr(x, "size"))
    assert state_sizes < 2 * 10 + 5  # Adam moments for the 10 head values (+ step counts), none for the body
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, opt_state, params)
    assert not jnp.any(updates["body"]["kernel"]) and jnp.all(updates["head"]["kernel"] != 0)


def test_backbone_learns_at_a_scaled_rate():
    config = jaxdl.default_config().optim
    config.update(name="sgd", learning_rate=1.0, head=("head",), backbone_lr_scale=0.1)
    params = {"body": jnp.ones(2), "head": jnp.ones(2)}
    tx = optim.build_optimizer(config, 10)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["head"], -1.0)
    np.testing.assert_allclose(updates["body"], -0.1)


def test_lora_merge_gives_the_adapted_models_outputs():
    base = models.CNN(num_classes=10, features=(4,), dense=16)
    lora = LoRA(base, rank=2, alpha=4.0, targets=("Dense_*/kernel",))
    x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
    variables = lora.init(jax.random.key(0), x, train=False)
    assert set(variables["params"]["lora"]) == {"Dense_0", "Dense_1"}
    # B starts at zero: the adapted model is the base model until it trains.
    np.testing.assert_array_equal(
        lora.apply(variables, x, train=False),
        base.apply({**variables, "params": variables["params"]["base"]}, x, train=False),
    )
    trained = jax.tree.map(lambda v: v + 0.1, variables["params"]["lora"])  # non-zero adapters
    variables = {**variables, "params": {**variables["params"], "lora": trained}}
    merged = {**variables, "params": lora.merge(variables["params"])}
    np.testing.assert_allclose(lora.apply(variables, x, train=False), base.apply(merged, x, train=False), atol=1e-5)
    with pytest.raises(UsageError, match="match no 2-D kernel"):
        LoRA(base, 2, 4.0, ("nothing*",)).init(jax.random.key(0), x, train=False)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, mnist_available):
    workdir = tmp_path_factory.mktemp("pretrained")
    jaxdl.train(tiny_run_config("mnist_cnn"), workdir)
    return workdir


def finetune_config(pretrained, **overrides):
    config = tiny_run_config("mnist_cnn")
    config.init["from"] = str(pretrained)
    for key, value in overrides.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


def test_init_from_loads_the_checkpoint_except_the_skipped_head(pretrained, tmp_path, monkeypatch):
    monkeypatch.chdir(pretrained.parent)  # a relative init.from, as users type it
    config = finetune_config(pretrained.name, **{"init.skip": ("Dense_1/*",), "train.max_steps": 1})
    run = training.setup(config)
    fresh = jax.jit(run.init_state)(jax.random.key(0))
    state = training.init_from_checkpoint(run, fresh)
    saved = params_of(pretrained)
    for name in ("Conv_0", "Conv_1", "Dense_0"):
        jax.tree.map(np.testing.assert_array_equal, state.params[name], saved[name])
    jax.tree.map(np.testing.assert_array_equal, state.params["Dense_1"], fresh.params["Dense_1"])
    assert int(state.step) == 0  # parameters only: not the step or the optimizer state


def test_frozen_layers_stay_bit_identical_while_the_head_trains(pretrained, tmp_path):
    config = finetune_config(pretrained, **{"optim.trainable": ("Dense_1/*",), "train.max_steps": 4})
    jaxdl.train(config, tmp_path / "frozen")
    before, after = params_of(pretrained), params_of(tmp_path / "frozen")
    for name in ("Conv_0", "Conv_1", "Dense_0"):
        jax.tree.map(np.testing.assert_array_equal, after[name], before[name])
    assert not np.array_equal(after["Dense_1"]["kernel"], before["Dense_1"]["kernel"])


def test_lora_trains_adapters_only_and_merges_into_a_model_with_the_same_outputs(pretrained, tmp_path):
    lora = {"lora.rank": 4, "lora.targets": ("Dense_*/kernel",), "train.max_steps": 4}
    jaxdl.train(finetune_config(pretrained, **lora), tmp_path / "lora")
    config = config_lib.load_config(tmp_path / "lora")
    run, state, _ = inference.restore(config, tmp_path / "lora")
    jax.tree.map(np.testing.assert_array_equal, state.params["base"], params_of(pretrained))
    merged_dir = inference.merge_lora(config, tmp_path / "lora")
    plain_config = config_lib.load_config(merged_dir)
    assert plain_config.lora.rank == 0
    plain_run, plain_state, _ = inference.restore(plain_config, merged_dir)
    x = jax.random.uniform(jax.random.key(2), (5, 28, 28, 1))
    adapted = run.experiment.model.apply(state.variables, x, train=False)
    plain = plain_run.experiment.model.apply(plain_state.variables, x, train=False)
    np.testing.assert_allclose(plain, adapted, atol=1e-5)
    assert not isinstance(plain_run.experiment.model, LoRA)


def test_finetuning_from_a_checkpoint_written_on_four_devices(tmp_path, mnist_available):
    four = tmp_path / "four"
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    result = run_cli("--experiment=mnist_cnn", f"--workdir={four}", *QUICK, "--config.train.max_steps=2", env=env)
    assert result.returncode == 0, result.stderr
    run = training.setup(finetune_config(four))
    state = training.init_from_checkpoint(run, jax.jit(run.init_state)(jax.random.key(0)))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), params_of(four))


def test_init_from_errors_are_usage_errors_with_exit_2(pretrained, tmp_path):
    result = run_cli(
        "--experiment=mnist_cnn",
        f"--workdir={tmp_path}/a",
        *QUICK,
        f"--config.init.from={pretrained}",
        "--config.model.dense=64",
    )
    assert result.returncode == 2 and "params/Dense_0/kernel has shape (1568, 128)" in result.stderr
    result = run_cli("--experiment=mnist_cnn", f"--workdir={tmp_path}/b", *QUICK, f"--config.init.from={tmp_path}")
    assert result.returncode == 2 and "holds no checkpoint" in result.stderr
    result = run_cli("--experiment=mnist_cnn", *QUICK, "--config.init.skip=('x',)")
    assert result.returncode == 2 and "needs --config.init.from" in result.stderr
