"""Image augmentation as jax functions of (batch, key), run inside the compiled train step (see `Dataset.augment`).

Every function draws its random numbers from the key it is given, which the loop derives from (seed, step): the
same images after a resume and on any number of devices. Images are batch["inputs"] of shape (N, H, W, C).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Augmentation = Callable[[dict, jax.Array], dict]


def random_shift(batch: dict, rng: jax.Array, max_shift: int = 1) -> dict:
    """Shift each image of batch["inputs"] (N, H, W, C) by a uniform random (dy, dx) in [-max_shift, max_shift],
    filling the uncovered border with zeros."""
    images = batch["inputs"]
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = jax.random.randint(rng, (n, 2), 0, 2 * max_shift + 1)
    crop = lambda image, offset: jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))
    return {**batch, "inputs": jax.vmap(crop)(padded, offsets)}


def affine_warp(image: jax.Array, matrix: jax.Array, offset: jax.Array) -> jax.Array:
    """`image` (H, W, C) resampled bilinearly at matrix @ (y, x) + offset for every output pixel (y, x) measured
    from the image centre; pixels that come from outside the image are zero."""
    h, w = image.shape[:2]
    centre = jnp.array([(h - 1) / 2, (w - 1) / 2])
    grid = jnp.stack(jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij"), axis=-1) - centre  # (H, W, 2)
    source = jnp.einsum("ij,hwj->ihw", matrix, grid) + (centre + offset)[:, None, None]  # (2, H, W)
    warp_channel = lambda channel: jax.scipy.ndimage.map_coordinates(channel, [source[0], source[1]], order=1)
    return jax.vmap(warp_channel, in_axes=2, out_axes=2)(image)


def random_affine(
    batch: dict, rng: jax.Array, max_degrees: float = 0.0, max_shift: float = 0.0, max_scale: float = 0.0
) -> dict:
    """Rotate each image by a uniform random angle in [-max_degrees, max_degrees] about its centre, scale it by a
    factor in [1 - max_scale, 1 + max_scale] and shift it by up to max_shift pixels (sub-pixel) per axis: one
    bilinear resampling per image, zero fill outside."""
    images = batch["inputs"]
    angle_key, scale_key, shift_key = jax.random.split(rng, 3)
    n = images.shape[0]
    angles = jnp.deg2rad(jax.random.uniform(angle_key, (n,), minval=-max_degrees, maxval=max_degrees))
    scales = 1.0 + jax.random.uniform(scale_key, (n,), minval=-max_scale, maxval=max_scale)
    shifts = jax.random.uniform(shift_key, (n, 2), minval=-max_shift, maxval=max_shift)
    cos, sin = jnp.cos(angles) / scales, jnp.sin(angles) / scales  # output -> source: the inverse transform
    matrices = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)  # (N, 2, 2)
    warped = jax.vmap(affine_warp)(images.astype(jnp.float32), matrices, -shifts)
    return {**batch, "inputs": warped.astype(images.dtype)}


def random_rotation(batch: dict, rng: jax.Array, max_degrees: float = 10.0) -> dict:
    """Rotate each image by a uniform random angle in [-max_degrees, max_degrees] about its centre."""
    return random_affine(batch, rng, max_degrees=max_degrees)


def chain(*augmentations: Augmentation) -> Augmentation:
    """One augmentation applying `augmentations` in order, each with a key of its own (fold_in of its index)."""

    def augment(batch: dict, rng: jax.Array) -> dict:
        for index, augmentation in enumerate(augmentations):
            batch = augmentation(batch, jax.random.fold_in(rng, index))
        return batch

    return augment
