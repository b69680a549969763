"""LoRA for any Flax model: each targeted 2-D kernel W is used as W + (alpha / rank) * A @ B.

`LoRA(base, ...)` has the same `init`/`apply` as the model it wraps, so the train step, sampling and evaluation use
it unchanged. Its params are {"base": the model's params, "lora": A and B for each targeted kernel, nested like the
kernels}; the optimizer trains only "lora/*". B starts at zero, so training starts from the base model exactly.
`merge(params)` folds the adapters into plain params that load into the un-adapted model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxdl import paths
from jaxdl.errors import UsageError


@dataclasses.dataclass(frozen=True)
class LoRA:
    base: nn.Module
    rank: int
    alpha: float
    targets: Sequence[str]  # path globs of the kernels to adapt, e.g. ("*/query/kernel", "*/value/kernel")

    def init(self, rngs: Any, *args, **kwargs) -> dict:
        variables = self.base.init(rngs, *args, **kwargs)
        key = rngs["params"] if isinstance(rngs, dict) else rngs
        kernels = {
            path: kernel
            for path, kernel in traverse_util.flatten_dict(variables["params"]).items()
            if kernel.ndim == 2 and paths.matches("/".join(path), self.targets)
        }
        if not kernels:
            names = ", ".join(paths.names(variables["params"]))
            raise UsageError(f"lora.targets={tuple(self.targets)} match no 2-D kernel; the parameters are: {names}")
        adapters = {}
        for i, (path, kernel) in enumerate(sorted(kernels.items())):
            fan_in, fan_out = kernel.shape
            # A like a Dense init, B zero: the adapted model equals the base model at step 0.
            adapters[(*path, "a")] = jax.random.normal(jax.random.fold_in(key, i), (fan_in, self.rank)) / fan_in**0.5
            adapters[(*path, "b")] = jnp.zeros((self.rank, fan_out))
        return {**variables, "params": {"base": variables["params"], "lora": traverse_util.unflatten_dict(adapters)}}

    def apply(self, variables: dict, *args, **kwargs) -> Any:
        return self.base.apply({**variables, "params": self.merge(variables["params"])}, *args, **kwargs)

    def merge(self, params: dict) -> dict:
        """Plain params for the base model: every adapted kernel replaced by W + (alpha / rank) * A @ B."""
        merged = traverse_util.flatten_dict(params["base"])
        adapters = traverse_util.flatten_dict(params["lora"])
        for path in {p[:-1] for p in adapters}:
            delta = adapters[(*path, "a")] @ adapters[(*path, "b")]
            merged[path] = merged[path] + (self.alpha / self.rank) * delta.astype(merged[path].dtype)
        return traverse_util.unflatten_dict(merged)

    def __getattr__(self, name: str) -> Any:
        # Everything else (context, vocab_size, init_cache, ...) is the base model's.
        return getattr(self.base, name)
