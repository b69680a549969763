"""One optax GradientTransformation from the `optim` config: optimizer, learning-rate schedule, clipping, L1/L2."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxdl import paths
from jaxdl.errors import UsageError


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    lr, warmup = config.learning_rate, config.warmup_steps
    schedules = {
        "constant": lambda: optax.constant_schedule(lr),
        "cosine": lambda: optax.cosine_decay_schedule(lr, total_steps, alpha=config.min_learning_rate / lr),
        "warmup_cosine": lambda: optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup, max(total_steps, warmup + 1), end_value=config.min_learning_rate
        ),
        "onecycle": lambda: optax.cosine_onecycle_schedule(
            total_steps, lr, pct_start=config.onecycle_pct_start, final_div_factor=config.onecycle_final_div
        ),
        # lr * step_factor ** (step // step_every_steps): the classic "divide by 10 every N steps"
        "step": lambda: optax.exponential_decay(lr, config.step_every_steps, config.step_factor, staircase=True),
    }
    if config.schedule not in schedules:
        raise UsageError(f"--config.optim.schedule={config.schedule}: choose one of {', '.join(schedules)}")
    return schedules[config.schedule]()


def _optimizer(config: ml_collections.ConfigDict, lr: optax.Schedule) -> optax.GradientTransformation:
    """The optimizer named by `config.name` at learning rate `lr`, after optional clipping and weight decay."""
    wd, momentum = config.weight_decay, config.momentum
    # Weight decay applies to every parameter except those matching optim.no_decay (biases, norms, embeddings).
    decay_mask = lambda params: jax.tree.map(lambda excluded: not excluded, paths.select(params, config.no_decay))
    optimizers = {
        "sgd": lambda: optax.sgd(lr),
        "momentum": lambda: optax.sgd(lr, momentum=momentum),
        "nesterov": lambda: optax.sgd(lr, momentum=momentum, nesterov=True),
        "adam": lambda: optax.adam(lr, b1=config.b1, b2=config.b2),
        "adamw": lambda: optax.adamw(lr, b1=config.b1, b2=config.b2, weight_decay=wd, mask=decay_mask),
        "rmsprop": lambda: optax.rmsprop(lr, momentum=momentum),
    }
    if config.name not in optimizers:
        raise UsageError(f"--config.optim.name={config.name}: choose one of {', '.join(optimizers)}")
    parts = []
    if config.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if wd and config.name != "adamw":  # L2 regularisation: weight_decay * params added to the gradient
        parts.append(optax.add_decayed_weights(wd, mask=decay_mask))
    if config.get("l1", 0.0):  # L1 regularisation: l1 * sign(params) added to the gradient; no_decay exempt
        parts.append(optax.masked(add_l1_penalty(config.l1), decay_mask))
    parts.append(optimizers[config.name]())
    return optax.chain(*parts)


def add_l1_penalty(strength: float) -> optax.GradientTransformation:
    """Adds strength * sign(param) to each gradient: the (sub)gradient of strength * sum(|param|)."""
    return optax.stateless(lambda grads, params: jax.tree.map(lambda g, p: g + strength * jnp.sign(p), grads, params))


def parameter_groups(params: Any, trainable: Sequence[str], head: Sequence[str]) -> Any:
    """A label per parameter: "frozen" (not matching `trainable`, when given), "head" (matching `head`) or
    "backbone" (the rest)."""

    def label(path, _):
        name = paths.path_name(path)
        if trainable and not paths.matches(name, trainable):
            return "frozen"
        return "head" if head and paths.matches(name, head) else "backbone"

    return jax.tree_util.tree_map_with_path(label, params)


def build_optimizer(
    config: ml_collections.ConfigDict, total_steps: int, trainable: Sequence[str] = ()
) -> optax.GradientTransformation:
    """One optax transformation for the whole model.

    Without `trainable` (path globs; everything else frozen) or `config.head` patterns it is the plain optimizer.
    Otherwise `optax.multi_transform` gives frozen parameters zero updates and no optimizer state, the head the
    full learning rate and the backbone `config.backbone_lr_scale` times it (discriminative learning rates).
    """
    lr = learning_rate_schedule(config, total_steps)
    if not trainable and not config.head:
        return _optimizer(config, lr)
    scale = config.backbone_lr_scale
    transforms = {
        "head": _optimizer(config, lr),
        "backbone": _optimizer(config, lambda step: scale * lr(step)),
        "frozen": optax.set_to_zero(),
    }
    return optax.multi_transform(transforms, lambda params: parameter_groups(params, trainable, config.head))
