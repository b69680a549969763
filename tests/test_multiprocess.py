"""Two real processes on localhost (jax.distributed, CPU collectives), two fake devices each."""

import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from test_sharding import assert_trees_close, losses_of, params_of

import jaxdl
from jaxdl import config as config_lib
from jaxdl import paths

from conftest import QUICK, ROOT, read_metrics, run_cli, run_script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_processes(workdir, *args, count=2, devices=2):
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    command = [sys.executable, "-m", "jaxdl.main", "--experiment=mnist_cnn", f"--workdir={workdir}", *QUICK, *args]
    distributed = [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={count}"]
    return [
        subprocess.Popen(
            [*command, *distributed, f"--process_id={i}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]


STEPS = ["--config.train.max_steps=6", "--config.train.log_every_steps=1"]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, mnist_available):
    workdir = tmp_path_factory.mktemp("two_processes")
    processes = start_processes(workdir, *STEPS)
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    return workdir, outputs


def test_two_processes_match_one_process_with_four_devices(two_process_run, tmp_path):
    workdir, outputs = two_process_run
    assert "4 device(s)" in outputs[0][1]
    assert outputs[1][1].count("train:") == 0  # only process 0 reports
    four = tmp_path / "four"
    result = run_cli(
        "--experiment=mnist_cnn",
        f"--workdir={four}",
        *QUICK,
        *STEPS,
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(losses_of(workdir), losses_of(four), rtol=2e-5)
    assert_trees_close(params_of(workdir), params_of(four), rtol=1e-4)


def test_checkpoint_restores_identically_on_one_device_and_in_an_fsdp_layout_then_training_continues(
    two_process_run, tmp_path
):
    workdir, _ = two_process_run
    one_device = params_of(workdir)  # this process: 1 process x 1 device
    out = tmp_path / "fsdp.npz"
    result = run_script("restore_driver.py", str(workdir), "1", "4", str(out), devices=4)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DEVICES 4" in result.stdout and "SHARDED 0" not in result.stdout
    fsdp = np.load(out)
    for name, value in zip(paths.names(one_device), jax.tree.leaves(one_device), strict=True):
        np.testing.assert_array_equal(fsdp[name], value)  # bit-identical across topologies

    config = config_lib.load_config(workdir)
    config.mesh.update(data=-1, fsdp=1)
    config.train.max_steps = 8
    jaxdl.train(config, workdir)
    assert [m["step"] for m in read_metrics(workdir) if m["split"] == "train"][-2:] == [7, 8]


def test_when_one_process_dies_the_other_stops_with_a_clear_error_in_bounded_time(tmp_path, mnist_available):
    processes = start_processes(
        tmp_path,
        "--config.train.max_steps=100000",
        "--config.train.log_every_steps=1",
        "--heartbeat_timeout_seconds=10",
    )
    survivor, victim = processes
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        assert time.time() < deadline and survivor.poll() is None, "training did not start"
        time.sleep(0.5)
    victim.kill()
    killed = time.time()
    _, stderr = survivor.communicate(timeout=120)
    assert time.time() - killed < 60  # bounded by the 10 s heartbeat timeout, with room for a loaded machine
    assert survivor.returncode != 0
    # Whichever notices first: a failed collective reaches Python (jaxdl's one line), or the coordination service's
    # missed heartbeats make jax terminate the process with its own message.
    assert (
        "jaxdl: error: process 0 of 2 stopped" in stderr
        or "This most likely indicates that another task died" in stderr
    )
