"""Next-token prediction: logits (batch, time, vocab) against targets (batch, time)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from jaxdl.tasks.supervised import Metrics, SupervisedTask


@dataclasses.dataclass(frozen=True)
class LanguageModel(SupervisedTask):
    def loss(self, logits: jax.Array, batch: dict) -> jax.Array:
        per_token = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["targets"])
        return per_token.mean(axis=-1)

    def eval_sums(self, logits: jax.Array, batch: dict) -> Metrics:
        mask = batch["mask"]
        per_token = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["targets"])
        return {
            "loss_sum": jnp.sum(jnp.where(mask[:, None], per_token, 0)),
            "tokens": jnp.sum(mask) * batch["targets"].shape[1],
        }

    def summarize(self, sums: dict) -> dict[str, float]:
        loss = float(sums["loss_sum"]) / float(sums["tokens"])
        return {"loss": loss, "perplexity": math.exp(loss)}
