"""Sharded training gives the one-device result: data-parallel, FSDP and mixed meshes on 8 fake CPU devices."""

import json

import jax
import numpy as np
import pytest

import jaxdl
from jaxdl import config as config_lib
from jaxdl import inference, sharding
from jaxdl.errors import UsageError

from conftest import read_metrics, run_cli, run_script, tiny_run_config


def losses_of(workdir):
    metrics = read_metrics(workdir)
    return [m["loss"] for m in metrics if m["split"] == "train"] + [metrics[-1]["loss"]]


def params_of(workdir, **mesh):
    """The run's last parameters, restored onto this process's devices."""
    config = config_lib.load_config(workdir)
    config.mesh.update(data=-1, fsdp=1, **mesh)
    return jax.device_get(inference.restore(config, workdir)[1].params)


def assert_trees_close(a, b, rtol, atol=1e-5):
    # atol: Adam divides by sqrt(second moment), so reduction-order noise on near-zero gradients grows to ~1e-6
    # in a few steps; parameters are ~1e-2 in scale.
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


@pytest.mark.parametrize("experiment", ["mnist_cnn", "shakespeare_gpt"])
def test_data_parallel_fsdp_and_mixed_meshes_match_one_device(tmp_path, experiment):
    baseline = tmp_path / "one_device"
    jaxdl.train(tiny_run_config(experiment), baseline)  # this process has one CPU device
    meshes = {"data_parallel": [8, 1], "fsdp": [1, 8], "mixed": [2, 4]}
    result = run_script("mesh_driver.py", experiment, str(tmp_path), json.dumps(meshes), devices=8)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.split("RESULTS ", 1)[1])
    assert {run["devices"] for run in runs.values()} == {8}
    assert runs["data_parallel"]["sharded_arrays"] == 0
    assert runs["fsdp"]["sharded_arrays"] > 0 and runs["mixed"]["sharded_arrays"] > 0
    for name in meshes:
        # Only the order of floating-point sums differs between layouts.
        np.testing.assert_allclose(losses_of(tmp_path / name), losses_of(baseline), rtol=2e-5)
        assert_trees_close(params_of(tmp_path / name), params_of(baseline), rtol=1e-4)


def test_fsdp_rule_splits_large_arrays_along_a_divisible_dimension_and_replicates_small_ones():
    P = jax.sharding.PartitionSpec
    assert sharding.fsdp_spec((128, 512), fsdp_size=4, min_size=16) == P(None, "fsdp")  # largest divisible dim
    assert sharding.fsdp_spec((512, 6), fsdp_size=4, min_size=16) == P("fsdp", None)
    assert sharding.fsdp_spec((3, 5), fsdp_size=4, min_size=1) == P()  # nothing divisible: replicated
    assert sharding.fsdp_spec((4,), fsdp_size=4, min_size=100) == P()  # small: replicated
    assert sharding.fsdp_spec((1024, 512), fsdp_size=1, min_size=16) == P()  # no fsdp axis


@pytest.mark.parametrize(
    ("data", "fsdp", "message"),
    [(3, 1, "does not divide the 1 devices"), (1, 2, "does not divide"), (0, 1, "give device counts")],
)
def test_bad_meshes_are_usage_errors(data, fsdp, message):
    config = jaxdl.default_config()
    config.mesh.update(data=data, fsdp=fsdp)
    with pytest.raises(UsageError, match=message):
        sharding.make_mesh(config.mesh)


def test_cpu_devices_splits_the_cpu_into_a_data_parallel_mesh_with_one_peak_per_process(tmp_path):
    """mesh.cpu_devices as the command line applies it (no device count in XLA_FLAGS): the run trains on that many
    devices, and MFU stays the same fraction: the devices share the process's cores, hence its one matmul peak."""
    tiny = ["--experiment=shakespeare_gpt", "--config.model.num_layers=1", "--config.model.width=32"]
    tiny += ["--config.model.num_heads=2", "--config.model.context=16", "--config.data.validation_windows=64"]
    tiny += ["--config.data.batch_size=8", "--config.data.eval_batch_size=64", "--config.train.max_steps=40"]
    tiny += ["--config.train.log_every_steps=20", "--config.train.peak_flops=1e11", "--compilation_cache=off"]
    per_flop = {}
    for count in (2, 1):
        workdir = tmp_path / f"cpu_devices_{count}"
        result = run_cli(*tiny, f"--config.mesh.cpu_devices={count}", f"--workdir={workdir}", env={"XLA_FLAGS": ""})
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"{count} device(s) {{'data': {count}, 'fsdp': 1}} (cpu)" in result.stderr
        last = [m for m in read_metrics(workdir) if m["split"] == "train"][-1]
        per_flop[count] = last["mfu"] / last["steps_per_sec"]  # FLOPs of a step / the peak
    assert 0.8 < per_flop[2] / per_flop[1] < 1.25, per_flop  # 0.5 if each device counted a peak of its own
    result = run_cli(*tiny, "--config.mesh.cpu_devices=3", f"--workdir={tmp_path / 'three'}", env={"XLA_FLAGS": ""})
    assert result.returncode == 2 and "not divisible by the 3 devices" in result.stderr.strip().splitlines()[-1]


def test_a_multi_device_cpu_run_keeps_few_calls_in_flight_and_does_not_hang(tmp_path):
    """XLA:CPU hangs once 33 calls of a program on several devices are in flight (jaxdl.sharding.MAX_CALLS_IN_FLIGHT):
    a collective's rendezvous times out after 40 s and aborts the process. This run on 2 devices logs only at its
    end and evaluates 16 windows per call, so 400 steps, then 100 evaluation calls, go out without a host sync:
    without the limit it aborted in each of the 3 runs tried."""
    small = ["--experiment=shakespeare_gpt", "--config.model.num_layers=1", "--config.data.validation_windows=1600"]
    small += ["--config.data.eval_batch_size=16", "--config.train.max_steps=400", "--config.train.log_every_steps=400"]
    small += ["--config.mesh.cpu_devices=2", "--compilation_cache=off"]
    result = run_cli(*small, f"--workdir={tmp_path / 'run'}", env={"XLA_FLAGS": ""}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [m["step"] for m in read_metrics(tmp_path / "run") if m["split"] == "test"] == [400]


def test_a_data_parallel_cpu_step_sums_all_gradients_in_one_all_reduce():
    """On CPU, XLA's all-reduce of many arrays costs one rendezvous of the devices per array; the per-device step
    (jaxdl.sharding.per_device_step) sums every gradient as one flat array, then splits it once. Where it would
    change the numbers (batch statistics, FSDP, a per-device gradient norm, the GAN's per-network optimizer) XLA's
    partitioned step stays; test_data_parallel_fsdp_and_mixed_meshes_match_one_device checks that both give one
    device's losses."""
    names = ["shakespeare_gpt", "mnist_cnn", "shakespeare_gpt:grad_norm", "shakespeare_gpt:fsdp"]
    names += ["mnist_cnn:batch_norm", "mnist_gan"]
    result = run_script("step_driver.py", *names, devices=2)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = json.loads(result.stdout.split("RESULTS ", 1)[1])
    assert [name for name in names if steps[name]["per_device"]] == ["shakespeare_gpt", "mnist_cnn"]
    for name in ("shakespeare_gpt", "mnist_cnn"):
        reduces = steps[name]["all_reduces"]
        assert any([steps[name]["parameters"]] in shapes for shapes in reduces), reduces  # all gradients, one array
        assert all(len(shapes) <= 3 for shapes in reduces), reduces  # with it, at most the train metrics (scalars)
        # Split once, into a buffer per gradient: read by each array's update, it made XLA emit a kernel per array.
        assert steps[name]["flat_sum_readers"] == 1, steps[name]["flat_sum_readers"]
    # The partitioned step sums the gradients array by array (combined into one all-reduce of many operands).
    assert max(len(shapes) for shapes in steps["shakespeare_gpt:grad_norm"]["all_reduces"]) > 10
