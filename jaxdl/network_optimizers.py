"""One optimizer per network, for models made of several networks trained against each other (a GAN's generator
and discriminator) or at different times.

The params are a dict with one entry per network, e.g. {"generator": ..., "discriminator": ...}. `PerNetwork` is an
optax-style transformation (`init`, `update`) whose state is a dict of the same keys, one optimizer state per
network, so it checkpoints, shards and restores like any other optimizer state. Its `update` advances every
network at once, like `optax.multi_transform`; `update_network` advances ONE network and leaves every other
network's parameters and optimizer state exactly as they were. That is what alternating updates need: with
`optax.multi_transform`, a discriminator update would pass zero gradients through the generator's Adam as well,
counting a step and decaying its moments by a half-step each time.

A task opts in through the training loop's optimizer hook (see `jaxdl.training.setup`): it defines
`optimizer(config_optim, total_steps, trainable)` and returns e.g. `from_config(config_optim, total_steps,
("generator", "discriminator"))`. Each network's settings are `config.optim` with that network's section on top:

    config.optim.update(name="adam", learning_rate=2e-4)     # shared by both networks
    config.optim.generator = {"b1": 0.5}                     # --config.optim.generator.learning_rate=1e-4 ...
    config.optim.discriminator = {"b1": 0.5, "learning_rate": 1e-4}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import ml_collections
import optax

from jaxdl import optim
from jaxdl.errors import UsageError


@dataclasses.dataclass(frozen=True)
class PerNetwork:
    """An optax-style transformation over {network: params} with one inner transformation per network."""

    transforms: dict[str, optax.GradientTransformation]

    def init(self, params: dict) -> dict:
        self._check(params)
        return {name: tx.init(params[name]) for name, tx in self.transforms.items()}

    def update(self, updates: dict, state: dict, params: dict | None = None) -> tuple[dict, dict]:
        """Every network's updates at once (what a generic train step calls)."""
        self._check(updates)
        results = {
            name: tx.update(updates[name], state[name], None if params is None else params[name])
            for name, tx in self.transforms.items()
        }
        return {name: r[0] for name, r in results.items()}, {name: r[1] for name, r in results.items()}

    def update_network(self, name: str, grads: Any, state: dict, params: dict) -> tuple[dict, dict]:
        """Apply network `name`'s optimizer to its gradients: (new params, new optimizer state), both whole trees,
        in which every other network's entries are the very same arrays as before."""
        updates, network_state = self.transforms[name].update(grads, state[name], params[name])
        return {**params, name: optax.apply_updates(params[name], updates)}, {**state, name: network_state}

    def _check(self, tree: Any) -> None:
        if not isinstance(tree, dict) or set(tree) != set(self.transforms):
            keys = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
            raise ValueError(f"one optimizer per network {sorted(self.transforms)}, but the params hold {keys}")


def network_config(
    config_optim: ml_collections.ConfigDict, name: str, names: Sequence[str]
) -> ml_collections.ConfigDict:
    """`config_optim` (without the networks' sections) overridden by its section `name`, when there is one."""
    merged = ml_collections.ConfigDict({k: v for k, v in config_optim.items() if k not in names})
    section = config_optim.get(name) or {}
    unknown = sorted(set(section) - set(merged))
    if unknown:
        raise UsageError(f"config.optim.{name} sets {', '.join(unknown)}: not optim fields; use those of config.optim")
    merged.update(dict(section))
    return merged


def from_config(
    config_optim: ml_collections.ConfigDict, total_steps: int, names: Sequence[str], trainable: Sequence[str] = ()
) -> PerNetwork:
    """One optimizer per network in `names`, each from `network_config(config_optim, name)`."""
    if trainable or config_optim.head:
        raise UsageError("optim.trainable and optim.head are not supported with one optimizer per network")
    return PerNetwork(
        {name: optim.build_optimizer(network_config(config_optim, name, names), total_steps) for name in names}
    )
