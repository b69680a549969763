"""A recurrent classifier: an LSTM or GRU reads a sequence (e.g. an image row by row); its last output is classified."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}


class RNNClassifier(nn.Module):
    num_classes: int
    hidden: int = 128  # state size of each recurrent layer
    num_layers: int = 1  # stacked recurrent layers; each reads the previous one's outputs
    cell: str = "lstm"  # lstm (flax's OptimizedLSTMCell) or gru
    unroll: int = 1  # time steps per iteration of the scan (a speed knob only; the result is the same)
    dtype: jnp.dtype = jnp.float32  # compute dtype; parameters are always float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.cell not in CELLS:
            from jaxdl.errors import UsageError

            raise UsageError(f"--config.model.cell={self.cell}: choose one of {', '.join(CELLS)}")
        # (N, T, ...) -> (N, T, features): time is the second axis; an image (N, 28, 28, 1) becomes 28 rows of 28.
        x = x.reshape(x.shape[0], x.shape[1], -1).astype(self.dtype)
        for layer in range(self.num_layers):
            # nn.RNN runs the cell with nn.scan: one compiled loop over time, not a Python loop. Parameter paths
            # are e.g. lstm_0/hi/kernel.
            cell = CELLS[self.cell](self.hidden, dtype=self.dtype, name=f"{self.cell}_{layer}")
            x = nn.RNN(cell, unroll=self.unroll)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x[:, -1])
