"""Image augmentation as jax functions of (batch, key), run inside the compiled train step (see `Dataset.augment`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_shift(batch: dict, rng: jax.Array, max_shift: int = 1) -> dict:
    """Shift each image of batch["inputs"] (N, H, W, C) by a uniform random (dy, dx) in [-max_shift, max_shift],
    filling the uncovered border with zeros."""
    images = batch["inputs"]
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = jax.random.randint(rng, (n, 2), 0, 2 * max_shift + 1)
    crop = lambda image, offset: jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))
    return {**batch, "inputs": jax.vmap(crop)(padded, offsets)}
