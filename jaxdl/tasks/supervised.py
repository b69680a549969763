"""The standard supervised step that most tasks share: value_and_grad -> optax update -> apply.

A task subclasses `SupervisedTask` and says how model outputs and a batch become a loss (`loss`), what to
report while training (`train_metrics`), and what to add up over an evaluation (`eval_sums`, `summarize`).
A task that needs a different step (two optimizers, say) overrides `train_step` with the same signature
(`grad_norm`: also report the gradients' global norm, `--config.train.grad_norm`), and the training loop never
learns the difference.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxdl.state import TrainState

Metrics = dict[str, jax.Array]


class SupervisedTask:
    """Base class: subclasses define loss, train_metrics, eval_sums and summarize."""

    def loss(self, outputs: jax.Array, batch: dict) -> jax.Array:
        """Per-example loss, shape (batch,)."""
        raise NotImplementedError

    def train_metrics(self, outputs: jax.Array, batch: dict) -> Metrics:
        return {}

    def eval_sums(self, outputs: jax.Array, batch: dict) -> Metrics:
        """Sums over the unmasked examples of a batch; adding them over batches gives the split's totals."""
        raise NotImplementedError

    def summarize(self, sums: dict[str, Any]) -> dict[str, float]:
        """Turn the totals of `eval_sums` into reported metrics."""
        raise NotImplementedError

    def init(self, model: nn.Module, rng: jax.Array, batch: dict) -> dict:
        """The model's variables, from one example batch."""
        return model.init({"params": rng, "dropout": rng}, batch["inputs"], train=False)

    def train_step(
        self,
        model: nn.Module,
        tx: optax.GradientTransformation,
        state: TrainState,
        batch: dict,
        rng: jax.Array,
        grad_norm: bool = False,
    ) -> tuple[TrainState, Metrics]:
        """One update; its metrics: the loss, `train_metrics`, and with `grad_norm` the gradients' global norm."""
        rng = jax.random.fold_in(rng, state.step)  # a fresh dropout key each step, reproducible after resume

        def loss_fn(params):
            outputs, model_state = model.apply(
                {"params": params, **state.model_state},
                batch["inputs"],
                train=True,
                rngs={"dropout": rng},
                mutable=list(state.model_state),
            )
            return self.loss(outputs, batch).mean(), (outputs, model_state)

        (loss, (outputs, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            model_state=model_state,
        )
        norm = {"grad_norm": optax.tree.norm(grads)} if grad_norm else {}
        return state, {"loss": loss, **norm, **self.train_metrics(outputs, batch)}

    def eval_step(self, model: nn.Module, state: TrainState, batch: dict) -> Metrics:
        outputs = model.apply(state.variables, batch["inputs"], train=False)
        return self.eval_sums(outputs, batch)


def masked_sum(values: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(mask, values, 0))
