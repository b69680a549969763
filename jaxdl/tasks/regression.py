"""Regression with a squared-error loss: one real target per example in batch["targets"].

The model sees (and the loss is in) the targets as the data gives them, usually standardised; `target_scale`
(the standard deviation divided out) turns MSE and MAE back into the original units. R^2 does not depend on it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.tasks.supervised import Metrics, SupervisedTask, masked_sum


@dataclasses.dataclass(frozen=True)
class Regression(SupervisedTask):
    target_scale: float = 1.0  # original units per model unit of the targets (their std when standardised)

    def loss(self, outputs: jax.Array, batch: dict) -> jax.Array:
        """Per-example squared error, computed in float32 whatever the model's compute dtype."""
        return jnp.square(_predictions(outputs, batch) - batch["targets"])

    def eval_sums(self, outputs: jax.Array, batch: dict) -> Metrics:
        # R^2 = 1 - SSE/SST needs the targets' spread: SST = sum(y^2) - (sum y)^2 / n, from sums that add over
        # batches. In float32 that difference is exact enough because standardised targets have mean ~0.
        mask, targets = batch["mask"], batch["targets"].astype(jnp.float32)
        error = _predictions(outputs, batch) - targets
        return {
            "count": jnp.sum(mask),
            "squared_error": masked_sum(jnp.square(error), mask),
            "absolute_error": masked_sum(jnp.abs(error), mask),
            "target_sum": masked_sum(targets, mask),
            "target_square_sum": masked_sum(jnp.square(targets), mask),
        }

    def summarize(self, sums: dict) -> dict[str, float]:
        sums = {k: np.float64(v) for k, v in sums.items()}
        count = sums["count"]
        total = sums["target_square_sum"] - sums["target_sum"] ** 2 / count  # SST around the split's own mean
        mse = sums["squared_error"] / count
        return {
            "loss": float(mse),  # the training objective: in the model's units
            "mse": float(mse * self.target_scale**2),  # original units
            "rmse": float(np.sqrt(mse) * self.target_scale),
            "mae": float(sums["absolute_error"] / count * self.target_scale),
            "r2": float(1.0 - sums["squared_error"] / total) if total > 0 else float("nan"),
            "count": int(count),
        }

    def evaluate_predictions(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """The same metrics for predictions made elsewhere (a reference model), all examples counted."""
        batch = {"targets": np.asarray(targets), "mask": np.ones(len(targets), bool)}
        return self.summarize(jax.device_get(self.eval_sums(np.asarray(outputs, np.float32), batch)))


def _predictions(outputs: jax.Array, batch: dict) -> jax.Array:
    """The model's (N, 1) output as (N,), like the targets, in float32."""
    return outputs.astype(jnp.float32).reshape(batch["targets"].shape)
