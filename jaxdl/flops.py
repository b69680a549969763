"""Model FLOPs utilisation: the FLOPs XLA counts in a compiled step, against a peak FLOP/s figure."""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxdl import compiler


def compiled_flops(compiled: jax.stages.Compiled) -> float:
    """FLOPs of one call of a compiled function, per device, as XLA's cost analysis counts them (0 if unknown)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax returns one dict per device program
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0))


def step_flops(compiled: jax.stages.Compiled, mesh: jax.sharding.Mesh) -> float:
    """FLOPs of one call of a step compiled for `mesh`, on all its devices: the MFU numerator."""
    return compiled_flops(compiled) * mesh.size


def peak_count(mesh: jax.sharding.Mesh) -> int:
    """How many peaks a mesh computes with: one per device, but on CPU one per process, whose devices
    (`mesh.cpu_devices`) share its cores; a matmul on one of them already runs on all (192 vs 196 GFLOP/s with 1
    and 2 devices on the 2-core machine of BUILD_NOTES.md)."""
    if mesh.devices.flat[0].platform == "cpu":
        return len({device.process_index for device in mesh.devices.flat})
    return mesh.size


@functools.cache
def measured_peak_flops(dtype: str = "float32", size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of one device on a large square matmul: a practical stand-in for its peak (best of `repeats`).
    Products are summed in float32 whatever `dtype` is: for bfloat16 that is what `matmul_dtype` runs, and on XLA:CPU
    the fast path (bfloat16 results were slower than float32, BUILD_NOTES.md issue 8)."""
    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def cache_file() -> Path:
    return compiler.cache_root() / "peak_flops.json"


def peak_flops() -> float:
    """`measured_peak_flops()` for this machine, measured once and then read from ~/.cache/jaxdl/peak_flops.json:
    timing the matmul took 0.7-0.9 s of every run's start-up. Delete the file to measure again.

    The key leaves out the device count: the measurement is one device's, and on CPU the devices of
    `mesh.cpu_devices` split one process's cores. One entry per device count let a reading taken on a busy machine
    (89 GFLOP/s, against 188 in an idle one) stand for every later two-device run, which then reported MFU above 1."""
    path, key = cache_file(), compiler.machine_key(device_count=False)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), float):
        return known[key]
    value = measured_peak_flops()
    try:  # a cache that cannot be written (read-only home) only costs the next run the measurement
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**known, key: value}, indent=1))
        tmp.replace(path)
    except OSError:
        pass
    return value


def low_peak_warning(mfu: float, configured: bool) -> str:
    """The line a train line's MFU above 1 calls for: only a peak below the real one gives that."""
    source = (
        "it comes from --config.train.peak_flops; raise it"
        if configured
        else f"it was probably timed on a busy machine and kept in {cache_file()}; delete that file to measure again"
    )
    return f"warning: MFU {mfu:.2f} exceeds 1, so the peak FLOP/s it is measured against is too low: {source}"
