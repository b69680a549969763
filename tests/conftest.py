"""Shared test set-up: the data directory beside the project, and running the command line in a subprocess."""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("JAXDL_DATA_DIR", str(ROOT.parent / "shared" / "data"))
DATA_DIR = Path(os.environ["JAXDL_DATA_DIR"])
# jaxdl's caches (compiled programs, the matmul peak) in a directory of this test session's own: the tests share
# them with each other, but neither read what an earlier session or the user's own runs left nor add to it.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="jaxdl-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)

# One CPU device in this process and in the command lines it starts, whatever an experiment's mesh.cpu_devices asks
# (jaxdl.sharding.use_cpu_devices): which test first started jax must not decide how many devices later tests see.
# Tests that want several devices set XLA_FLAGS themselves.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=1").strip()

# A short mnist_cnn run on a slice of the data: small enough for CI, the real experiment's code throughout.
QUICK = [
    "--config.data.train_examples=512",
    "--config.data.test_examples=250",
    "--config.data.batch_size=32",
    "--config.data.eval_batch_size=100",
    "--config.train.log_every_steps=2",
]


def tiny_run_config(experiment: str):
    """A few steps of mnist_cnn or shakespeare_gpt on a slice of their data: the real code paths, quickly."""
    import jaxdl

    config = jaxdl.get_config(experiment)
    config.train.update(max_steps=6, log_every_steps=1, eval_every_steps=0)
    config.data.update(batch_size=32, eval_batch_size=200)
    if experiment == "shakespeare_gpt":
        config.model.update(context=32, num_layers=2, num_heads=2, width=64)
        config.data.validation_windows = 100
    else:
        config.data.update(train_examples=512, test_examples=250)
    return config


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m jaxdl.main ARGS` with the test data directory; returns the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "jaxdl.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def run_script(script: str, *args: str, devices: int, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python tests/SCRIPT ARGS` on `devices` fake CPU devices (the count is fixed when jax starts)."""
    return subprocess.run(
        [sys.executable, f"tests/{script}", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"},
    )


def read_metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def mnist_available() -> None:
    if not (DATA_DIR / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"MNIST IDX files not found under {DATA_DIR}/mnist: set JAXDL_DATA_DIR")
