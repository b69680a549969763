"""One optax GradientTransformation from the `optim` config: optimizer, learning-rate schedule, clipping."""

from __future__ import annotations

import jax
import ml_collections
import optax

from jaxdl import paths
from jaxdl.errors import UsageError


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    lr, warmup = config.learning_rate, config.warmup_steps
    schedules = {
        "constant": lambda: optax.constant_schedule(lr),
        "cosine": lambda: optax.cosine_decay_schedule(lr, total_steps),
        "warmup_cosine": lambda: optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1)),
        "onecycle": lambda: optax.cosine_onecycle_schedule(total_steps, lr),
    }
    if config.schedule not in schedules:
        raise UsageError(f"--config.optim.schedule={config.schedule}: choose one of {', '.join(schedules)}")
    return schedules[config.schedule]()


def build_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """The optimizer named by `config.name`, driven by its schedule, after optional gradient-norm clipping."""
    lr = learning_rate_schedule(config, total_steps)
    wd, momentum = config.weight_decay, config.momentum
    # Weight decay applies to every parameter except those matching optim.no_decay (biases, norms, embeddings).
    decay_mask = lambda params: jax.tree.map(lambda excluded: not excluded, paths.select(params, config.no_decay))
    optimizers = {
        "sgd": lambda: optax.sgd(lr),
        "momentum": lambda: optax.sgd(lr, momentum=momentum),
        "nesterov": lambda: optax.sgd(lr, momentum=momentum, nesterov=True),
        "adam": lambda: optax.adam(lr),
        "adamw": lambda: optax.adamw(lr, weight_decay=wd, mask=decay_mask),
        "rmsprop": lambda: optax.rmsprop(lr, momentum=momentum),
    }
    if config.name not in optimizers:
        raise UsageError(f"--config.optim.name={config.name}: choose one of {', '.join(optimizers)}")
    parts = []
    if config.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if wd and config.name != "adamw":  # L2 regularisation: weight_decay * params added to the gradient
        parts.append(optax.add_decayed_weights(wd, mask=decay_mask))
    parts.append(optimizers[config.name]())
    return optax.chain(*parts)
