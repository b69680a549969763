"""What both sides of a comparison share, importing neither jax nor torch: data files, schedules, the result line.

A worker (one arm of a comparison, in its own process) prints exactly one `RESULT {json}` line on stdout; the
driver (`benchmarks/run.py`) collects them. Timings inside workers start at `PROCESS_START`, the moment the worker
process was created, so "time to accuracy" includes interpreter start, imports, data loading and compilation on
both sides.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import time
from pathlib import Path


def _process_start() -> float:
    """The perf_counter() reading at this process's creation (Linux: /proc/self/stat), else now."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in clock ticks
        return time.perf_counter() - (time.clock_gettime(time.CLOCK_BOOTTIME) - started_after_boot)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter()


PROCESS_START = _process_start()
ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "RESULT "

# The figures the issue asks for, with their targets (the numbers).
TARGETS = {
    "framework_tax": 0.97,  # jaxdl steps/s over a bare jit loop's, >=
    "cnn_throughput": 1.2,  # jaxdl images/s over PyTorch's, >=
    "time_to_99.0": 20.0,  # seconds, <=
    "time_to_99.2": 60.0,  # seconds, <=
    "gpt_wall": 0.8,  # jaxdl wall time to val loss <= 1.88 over PyTorch's, <=
    "cnn_mfu": 0.45,  # >=
    "data_wait": 0.05,  # fraction of step time, <
    "checkpoint_cost": 0.03,  # fractional slowdown, <
}
GPT_TARGET_LOSS = 1.88

# The recipes the PyTorch arms train with, named as in jaxdl's configs; checks.check_recipes verifies that they are
# the ones of mnist_cnn and shakespeare_gpt_reference, so a change of a default cannot leave the twin behind.
CNN_RECIPE = {
    "optim.learning_rate": 5e-3,
    "optim.onecycle_pct_start": 0.25,
    "optim.onecycle_final_div": 1e3,
    "data.batch_size": 128,
    "train.num_epochs": 3,
    "optim.ema_decay": 0.99,
}
CNN_STEPS = CNN_RECIPE["train.num_epochs"] * (60_000 // CNN_RECIPE["data.batch_size"])  # 1404: 3 epochs of MNIST
GPT_RECIPE = {
    "optim.learning_rate": 2e-3,
    "optim.warmup_steps": 100,
    "optim.min_learning_rate": 1e-4,
    "optim.b2": 0.99,
    "optim.weight_decay": 0.1,
    "optim.grad_clip_norm": 1.0,
    "data.batch_size": 12,
    "data.eval_batch_size": 100,
    "train.max_steps": 2000,
}
MNIST_TARGETS = (0.990, 0.992)


def data_dir() -> Path:
    return Path(os.environ.get("JAXDL_DATA_DIR", ROOT.parent / "shared" / "data"))


def emit(result: dict) -> None:
    """The worker's one result line."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def read_result(stdout: str) -> dict | None:
    """A worker's result, from the last line `emit` wrote to its stdout; None if it wrote none."""
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    return json.loads(lines[-1][len(RESULT_PREFIX) :]) if lines else None


def since_start() -> float:
    return time.perf_counter() - PROCESS_START


def read_idx(path: Path):
    """An IDX file of unsigned bytes as a numpy array (the format jaxdl.data.mnist reads)."""
    import numpy as np

    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int(n) for n in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist_arrays(split: str):
    """(images uint8 (N, 28, 28), labels int64) of the MNIST split, from $JAXDL_DATA_DIR/mnist."""
    prefix = "train" if split == "train" else "t10k"
    folder = data_dir() / "mnist"
    return read_idx(folder / f"{prefix}-images-idx3-ubyte.gz"), read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")


def shakespeare_arrays(context: int, train_fraction: float, validation_windows: int, seed: int):
    """(train tokens, validation windows (n, context + 1), vocabulary size): the same split as
    jaxdl.data.text.split_windows (benchmarks/checks.py compares the two)."""
    import numpy as np

    text = (data_dir() / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    chars = sorted(set(text))
    lookup = np.zeros(max(map(ord, chars)) + 1, np.int64)
    lookup[[ord(c) for c in chars]] = np.arange(len(chars))
    tokens = lookup[np.frombuffer(text.encode("utf-32-le"), np.uint32)]
    cut = int(len(tokens) * train_fraction)
    train, held_out = tokens[:cut], tokens[cut:]
    starts = np.random.default_rng(seed).integers(0, len(held_out) - context, validation_windows)
    windows = held_out[starts[:, None] + np.arange(context + 1)]
    return train, windows, len(chars)


def onecycle_torch_arguments(total_steps: int, pct_start: float) -> dict:
    """torch OneCycleLR arguments giving optax.cosine_onecycle_schedule(total_steps, ..., pct_start)'s curve exactly.

    optax's phases end at steps int(pct_start * T) and T; torch's at pct_start' * T' - 1 and T' - 1. With
    T' = T + 1 and pct_start' = (int(pct_start * T) + 1) / T' the phase ends coincide, and steps 0 .. T-1 match.
    """
    peak_step = int(pct_start * total_steps)
    return {"total_steps": total_steps + 1, "pct_start": (peak_step + 1) / (total_steps + 1)}


def warmup_cosine(step: int, peak: float, warmup: int, total: int, end: float) -> float:
    """optax.warmup_cosine_decay_schedule(0, peak, warmup, total, end)(step), in plain Python (for torch LambdaLR)."""
    if step < warmup:
        return peak * step / warmup
    decay = max(total - warmup, 1)
    progress = min(step - warmup, decay) / decay
    alpha = end / peak
    return peak * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * progress)) + alpha)
