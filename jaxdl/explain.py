"""Why a classifier chose its class: saliency maps and Grad-CAM, drawn as PNG overlays (`--mode=explain`).

- Saliency (Simonyan et al. 2013): |d logit[class] / d input|, the input's own shape.
- Grad-CAM (Selvaraju et al. 2017): the last convolution's feature maps A_k, weighted by the spatial mean of
  d logit[class] / d A_k, summed, clipped at zero and resized to the input; and HiResCAM, its per-position variant
  (see `class_activation_maps`).

The last convolution is found and its gradient taken without changing the model: a flax method interceptor
(`nn.intercept_methods`) records every `nn.Conv` call's output and adds a zero "delta" to the last one, so the
gradient with respect to the delta is the gradient with respect to that feature map. Any model built from
`nn.Conv` layers works, a user's own included. Rejected: `sow` + `perturb` inside the model (perturb creates a
variable at init, which would enter the train state and the checkpoints).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.plot import new_figure, save

PANEL_INCHES = 3.5  # each panel: input | saliency | Grad-CAM | HiResCAM


def target_logit(outputs: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.take_along_axis(outputs.astype(jnp.float32), target[:, None], axis=-1).sum()


def saliency(apply: Callable, inputs: jax.Array, target: jax.Array) -> np.ndarray:
    """|gradient of each example's `target` logit with respect to its input|: the inputs' shape.

    `apply(inputs) -> logits` is the model in evaluation mode; `inputs` are preprocessed, as the model sees them.
    """
    gradient = jax.grad(lambda x: target_logit(apply(x), target))(jnp.asarray(inputs, jnp.float32))
    return np.abs(np.asarray(gradient))


def _conv_calls(apply: Callable, inputs: jax.Array, delta: jax.Array | None = None) -> tuple[jax.Array, list]:
    """The logits, and (module path, output) of every nn.Conv call in call order; `delta` is added to the last
    conv's output (its path found by a first call without delta)."""
    calls = []

    def interceptor(next_fun, args, kwargs, context):
        output = next_fun(*args, **kwargs)
        if isinstance(context.module, nn.Conv) and context.method_name == "__call__":
            calls.append((context.module.path, output))
            if delta is not None and delta[0] == context.module.path:
                output = output + delta[1]
        return output

    with nn.intercept_methods(interceptor):
        logits = apply(inputs)
    return logits, calls


def class_activation_maps(apply: Callable, inputs: jax.Array, target: jax.Array) -> dict[str, np.ndarray] | None:
    """{"Grad-CAM": ..., "HiResCAM": ...}: heat maps in [0, 1], (batch, height, width) of the inputs, from the last
    nn.Conv's output A; None for a model without nn.Conv.

    Grad-CAM weighs each channel by its spatially averaged gradient: relu(sum_k mean(dy/dA_k) A_k). HiResCAM
    (Draelos & Carin 2020) keeps the gradient per position: relu(sum_k dy/dA_k * A_k), each position's first-order
    contribution to the logit. The two agree for a head that averages over space; for a flatten + dense head such
    as jaxdl's CNN the averaged weights lose where the evidence is (measured on mnist_cnn: Grad-CAM near 0
    everywhere, HiResCAM on the strokes), so both are drawn.
    """
    inputs = jnp.asarray(inputs, jnp.float32)
    _, calls = _conv_calls(apply, inputs)
    if not calls:
        return None
    path, feature_map = calls[-1]

    def logit(delta):
        logits, calls = _conv_calls(apply, inputs, (path, delta))
        return target_logit(logits, target), calls[-1][1] + delta

    gradient, feature_map = jax.grad(logit, has_aux=True)(jnp.zeros_like(feature_map))
    gradient, feature_map = gradient.astype(jnp.float32), feature_map.astype(jnp.float32)
    maps = {
        "Grad-CAM": (gradient.mean(axis=(1, 2), keepdims=True) * feature_map).sum(-1),
        "HiResCAM": (gradient * feature_map).sum(-1),
    }
    resize = lambda cam: jax.image.resize(cam, (cam.shape[0], *inputs.shape[1:3]), "bilinear")
    return {name: np.asarray(normalize(resize(jax.nn.relu(cam)))) for name, cam in maps.items()}


def normalize(maps: jax.Array) -> jax.Array:
    """Each map scaled to [0, 1] (a constant map becomes zeros)."""
    low = maps.min(axis=tuple(range(1, maps.ndim)), keepdims=True)
    high = maps.max(axis=tuple(range(1, maps.ndim)), keepdims=True)
    return (maps - low) / jnp.where(high > low, high - low, 1.0)


def overlay(image: np.ndarray, saliency_map: np.ndarray, cams: dict[str, np.ndarray] | None, title: str, out) -> Path:
    """One PNG: the input, then its saliency and class activation maps over it (when the model has convolutions)."""
    heat = np.asarray(normalize(jnp.asarray(saliency_map.max(-1))[None]))[0]  # strongest channel per pixel
    panels = [("input", None), ("saliency |d logit / d input|", heat)]
    panels += [(f"{name} (last nn.Conv)", cam) for name, cam in (cams or {"Grad-CAM: no nn.Conv": None}).items()]
    figure = new_figure(PANEL_INCHES * len(panels), PANEL_INCHES + 0.8)
    shown = image[..., 0] if image.shape[-1] == 1 else image
    for ax, (name, heat_map) in zip(figure.subplots(1, len(panels)), panels, strict=True):
        ax.axis("off")
        ax.imshow(shown, cmap="gray")
        if heat_map is not None:
            ax.imshow(heat_map, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
    figure.suptitle(title)
    return save(figure, out)
