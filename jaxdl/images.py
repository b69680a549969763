"""Images a run writes: PNG grids of image batches, and the images a task produces at evaluation time.

A task may define `images(model, state, batch, rng) -> {name: array (rows, columns, H, W, C) in [0, 1]}`. The
training loop then calls it at every evaluation and at the end of training, with the first `EXAMPLES` test
examples (preprocessed) and a key that depends only on the seed (so e.g. a GAN draws the same latent vectors each
time and its grids are comparable over a run), and writes each batch as WORKDIR/images/NAME_stepN.png and as a
TensorBoard image NAME. Tasks without it write nothing.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from PIL import Image

from jaxdl import compiler, sharding

EXAMPLES = 64  # test examples handed to a task's `images` method


def grid(images: np.ndarray, columns: int, padding: int = 2) -> np.ndarray:
    """(N, H, W[, C]) images, floats in [0, 1] or uint8, tiled `columns` per row with `padding` grey pixels
    around and between tiles: (rows*(H+padding)+padding, columns*(W+padding)+padding, C) uint8, C = 1 or 3."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected images shaped (N, H, W, 1 or 3), got {images.shape}")
    if images.dtype != np.uint8:
        images = np.round(np.clip(np.nan_to_num(images.astype(np.float32)), 0, 1) * 255).astype(np.uint8)
    count, height, width, channels = images.shape
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    out = np.full((rows * (height + padding) + padding, columns * (width + padding) + padding, channels), 128, np.uint8)
    for i, image in enumerate(images):
        top, left = padding + (i // columns) * (height + padding), padding + (i % columns) * (width + padding)
        out[top : top + height, left : left + width] = image
    return out


def save_grid(images: np.ndarray, path: str | Path, columns: int, padding: int = 2) -> Path:
    """Write `images` (N, H, W[, C]) as one PNG grid, `columns` per row (see `grid`); replaced atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tiles = grid(images, columns, padding)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(tiles[..., 0] if tiles.shape[-1] == 1 else tiles).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def task_image_writer(run: Any, workdir: Path, reporter: Any) -> Callable[[Any, int], None]:
    """`write(state, step)`: the task's images at `step` as PNG grids under workdir/images (and TensorBoard).

    `run` is the loop's `jaxdl.training.Setup`. A no-op for tasks without an `images` method. Every process
    computes (the state may be spread over all of them); only process 0 writes. A step is written once.
    """
    task, model = run.experiment.task, run.experiment.model
    if not callable(getattr(task, "images", None)):
        return lambda state, step: None
    replicated = sharding.replicated(run.mesh)
    count = min(EXAMPLES, len(run.test_source))
    local = run.experiment.data.preprocess(run.test_source.take(np.arange(count)))
    batch = {k: jax.make_array_from_process_local_data(replicated, np.asarray(v)) for k, v in local.items()}
    rng = jax.random.fold_in(jax.random.key(run.config.seed), 0x1A9E)  # the seed's, not the step's: comparable
    compute = jax.jit(
        functools.partial(task.images, model),
        in_shardings=(run.state_sharding, replicated, replicated),
        out_shardings=replicated,
        compiler_options=compiler.options(run.mesh),
    )
    written = set()

    def write(state: Any, step: int) -> None:
        if step in written:
            return
        written.add(step)
        named = jax.device_get(compute(state, batch, rng))
        if jax.process_index() != 0:
            return
        for name, images in named.items():
            rows, columns = images.shape[:2]
            flat = np.asarray(images).reshape(rows * columns, *images.shape[2:])
            save_grid(flat, workdir / "images" / f"{name}_step{step}.png", columns)
            if getattr(reporter, "active", False):
                reporter.tensorboard.add_image(name, grid(flat, columns), step, dataformats="HWC")

    return write
