"""A multilayer perceptron: flatten, then [dense -> activation -> dropout] per hidden layer, then a dense output."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    outputs: int  # classes (logits), 1 for a regression or a binary logit
    hidden: Sequence[int] = (128,)  # width of each hidden layer; () = a linear model
    activation: str | Callable[[jax.Array], jax.Array] = (
        "relu"  # a name in flax.linen (relu, gelu, tanh, ...) or a function
    )
    dropout: float = 0.0  # after each hidden activation, while training
    dtype: jnp.dtype = jnp.float32  # compute dtype; parameters are always float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        activation = activation_function(self.activation)
        x = x.reshape(x.shape[0], -1).astype(self.dtype)  # images (N, H, W, C) or tables (N, F) alike
        for width in self.hidden:
            x = activation(nn.Dense(width, dtype=self.dtype)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.outputs, dtype=self.dtype)(x)


def activation_function(name_or_function: str | Callable) -> Callable[[jax.Array], jax.Array]:
    """A function, or its name in flax.linen (config files hold names: plain data)."""
    if callable(name_or_function):
        return name_or_function
    function = getattr(nn, name_or_function, None)
    if not callable(function) or name_or_function.startswith("_") or isinstance(function, type):
        # Raised while the model is traced in setup(), so the command line turns it into exit status 2.
        from jaxdl.errors import UsageError

        raise UsageError(f"activation '{name_or_function}' is not an activation in flax.linen; try relu, gelu, tanh")
    return function
