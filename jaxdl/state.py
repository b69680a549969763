"""The train state: everything a step reads and writes, and all that a checkpoint must hold besides the data
position. A pytree of arrays, so it can be jit-compiled, sharded, donated and saved by orbax as it is."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: number of updates applied
    params: Any  # trainable parameters (the "params" collection)
    opt_state: Any  # optax state for `params`
    model_state: Any  # the model's other collections, e.g. {"batch_stats": ...}; {} when it has none

    @classmethod
    def create(cls, variables: dict, tx: optax.GradientTransformation) -> TrainState:
        params = variables["params"]
        model_state = {k: v for k, v in variables.items() if k != "params"}
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), model_state=model_state)

    @property
    def variables(self) -> dict:
        """What `model.apply` takes."""
        return {"params": self.params, **self.model_state}
