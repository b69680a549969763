"""Model FLOPs utilisation: the FLOPs XLA counts in a compiled step, against a peak FLOP/s figure."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp


def compiled_flops(compiled: jax.stages.Compiled) -> float:
    """FLOPs of one call of a compiled function, per device, as XLA's cost analysis counts them (0 if unknown)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax returns one dict per device program
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0))


@functools.cache
def measured_peak_flops(dtype: str = "float32", size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of one device on a large square matmul: a practical stand-in for its peak (best of `repeats`)."""
    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
