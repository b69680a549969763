"""Host memory: keeping what XLA:CPU frees, so that the next step does not have to fault it back in.

XLA:CPU allocates each step's scratch memory anew (the reference GPT's step on two CPU devices: 23.7 MB per device
per step) with the C library's malloc, from the executing thread's arena. glibc gives such blocks back to the kernel
when they are freed: an arena's heap that becomes empty is unmapped, and a large block is mmapped and unmapped each
time. The next step then takes a page fault for every 4 KiB it touches: in some runs, for minutes at a time, 120-200
thousand faults a second, a tenth of the time in the kernel, and the GPT's steps 36-42 ms instead of 30 (BUILD_NOTES.md,
issue 8).
"""

from __future__ import annotations

import ctypes
import os
import platform

from absl import logging
from jax.sharding import Mesh

M_TOP_PAD, M_MMAP_THRESHOLD = -2, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks up to 32 MiB come from the arenas, not from mmap
TOP_PAD = 64 << 20  # free memory an arena keeps, at its top or as a whole heap, instead of giving it back


def keep_freed_memory(mesh: Mesh) -> bool:
    """On a mesh of CPU devices, make glibc's malloc keep up to 64 MiB of freed memory per arena and serve blocks of
    up to 32 MiB from the arenas. The process then holds a little more memory (at most 64 MiB per thread that
    allocates), and XLA:CPU's per-step buffers are reused instead of faulted in again. Returns whether it applied:
    not on GPU or TPU, not with another C library than glibc, nor when the environment already tunes malloc
    (GLIBC_TUNABLES, MALLOC_*_), which wins."""
    if mesh.devices.flat[0].platform != "cpu" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if "malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    libc = ctypes.CDLL("libc.so.6")
    applied = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TOP_PAD, TOP_PAD) == 1
    if not applied:
        logging.warning("glibc's mallopt refused jaxdl's settings; freed memory goes back to the kernel as before")
    return applied
