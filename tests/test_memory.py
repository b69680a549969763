"""jaxdl.memory: freed memory kept by glibc's malloc on CPU, so that per-step buffers are not faulted in again."""

import json
import os
import platform
import subprocess
import sys

import pytest

from conftest import ROOT

# In a thread of its own (its own malloc arena, like XLA's threads), three 24 MiB buffers at a time, more than one
# 64 MiB arena heap holds, allocated, written and freed 20 times: page faults per round, in a fresh process.
ROUNDS = """
import json, resource, sys, threading
import jax, numpy as np
from jaxdl import memory
applied = memory.keep_freed_memory(jax.make_mesh((1,), ("data",))) if sys.argv[1] == "keep" else None
def rounds(out):
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(20):
        buffers = [np.ones(6 << 20, np.float32) for _ in range(3)]
        del buffers
    out.append((resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / 20)
out = []
thread = threading.Thread(target=rounds, args=(out,))
thread.start()
thread.join()
print(json.dumps({"applied": applied, "faults": out[0]}))
"""


def faults_per_round(mode: str, env: dict | None = None) -> dict:
    clean = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    result = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, cwd=ROOT, env={**clean, **(env or {})}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc; elsewhere it does nothing")
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    kept, default = faults_per_round("keep"), faults_per_round("default")
    assert kept["applied"] is True
    # Measured: ~80 faults a round kept, ~600 by glibc's defaults (6,144 pages per buffer).
    assert kept["faults"] * 3 < default["faults"], (kept, default)
    # The user's own malloc tuning wins: nothing applied, glibc's behaviour as the environment says.
    tuned = faults_per_round("keep", env={"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"})
    assert tuned["applied"] is False
