"""Reconstruction (autoencoders): the model maps inputs to outputs of the same shape, and the target is the input
itself. The loss is the mean squared error per example; evaluation reports the split's MSE per pixel."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.state import TrainState
from jaxdl.tasks.supervised import Metrics, SupervisedTask, masked_sum


def squared_error(outputs: jax.Array, inputs: jax.Array) -> jax.Array:
    """Mean squared error of each example over all its other axes, shape (batch,), in float32."""
    error = jnp.square(outputs.astype(jnp.float32) - inputs.astype(jnp.float32))
    return error.reshape(error.shape[0], -1).mean(axis=1)


@dataclasses.dataclass(frozen=True)
class Reconstruction(SupervisedTask):
    """batch["inputs"] is both the model's input and its target; batch["targets"] (e.g. labels) is not used."""

    image_columns: int = 8  # the comparison grid: this many examples per row...
    image_rows: int = 4  # ...and this many rows of inputs, each followed by a row of their reconstructions

    def loss(self, outputs: jax.Array, batch: dict) -> jax.Array:
        return squared_error(outputs, batch["inputs"])

    def eval_sums(self, outputs: jax.Array, batch: dict) -> Metrics:
        return {
            "squared_error_sum": masked_sum(self.loss(outputs, batch), batch["mask"]),
            "count": jnp.sum(batch["mask"]),
        }

    def summarize(self, sums: dict) -> dict[str, float]:
        mse = float(sums["squared_error_sum"]) / float(sums["count"])
        # "loss" and "mse" are the same number: "loss" is what every task reports, "mse" says what it is.
        return {"loss": mse, "mse": mse, "count": int(sums["count"])}

    def images(self, model: nn.Module, state: TrainState, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
        """The first examples of the batch and their reconstructions, as (rows, columns, H, W, C): rows of inputs,
        each followed by the row of their reconstructions (see `jaxdl.images`)."""
        columns = min(self.image_columns, batch["inputs"].shape[0])
        rows = min(self.image_rows, batch["inputs"].shape[0] // columns)
        inputs = batch["inputs"][: rows * columns].astype(jnp.float32)
        outputs = model.apply(state.variables, inputs, train=False).astype(jnp.float32)
        image_shape = inputs.shape[1:]
        pairs = jnp.stack(
            [inputs.reshape(rows, columns, *image_shape), outputs.reshape(rows, columns, *image_shape)], 1
        )
        return {"reconstructions": pairs.reshape(2 * rows, columns, *image_shape)}
