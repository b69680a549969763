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
    # The parameters' moving average (optim.ema_decay > 0), which evaluation, inference and fine-tuning use; None
    # (no leaves: the checkpoint's arrays are those of a state without it) when off.
    ema_params: Any = None

    @classmethod
    def create(cls, variables: dict, tx: optax.GradientTransformation, ema: bool = False) -> TrainState:
        params = variables["params"]
        model_state = {k: v for k, v in variables.items() if k != "params"}
        ema_params = jax.tree.map(jnp.copy, params) if ema else None
        return cls(jnp.zeros((), jnp.int32), params, tx.init(params), model_state, ema_params)

    def evaluated(self) -> TrainState:
        """The state the model is evaluated with: its parameters replaced by their moving average, when kept."""
        return self if self.ema_params is None else self.replace(params=self.ema_params)

    def update_average(self, decay: float) -> TrainState:
        """Move the parameters' average towards the current ones (after an update). The decay is warmed up as in
        TensorFlow's ExponentialMovingAverage, min(decay, (1 + step) / (10 + step)), so that early averages follow
        the parameters instead of holding on to their random initialisation."""
        if self.ema_params is None:
            return self
        rate = 1.0 - jnp.minimum(decay, (1.0 + self.step) / (10.0 + self.step))
        # average + rate * (params - average), not optax.incremental_update's rate * params + (1 - rate) * average:
        # the average of a parameter that does not change (a frozen layer) then stays bit-identical to it.
        move = lambda p, a: a + (rate * (p - a)).astype(a.dtype)
        return self.replace(ema_params=jax.tree.map(move, self.params, self.ema_params))

    @property
    def variables(self) -> dict:
        """What `model.apply` takes."""
        return {"params": self.params, **self.model_state}
