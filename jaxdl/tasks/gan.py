"""Generative adversarial training: a discriminator update, then a generator update, in one compiled step.

The model (e.g. `jaxdl.models.GAN`) holds both networks, params {"generator": ..., "discriminator": ...}, with
`generate(z)` and `discriminate(x)` methods and a `latent_dim` attribute. Each network has its own optimizer
(`jaxdl.network_optimizers`, built from `config.optim` and its `generator` / `discriminator` sections through
the loop's optimizer hook), and each update advances only its own network's parameters and optimizer state.

Losses (the non-saturating GAN of Goodfellow et al. 2014 / DCGAN), with D's logits and sigmoid cross-entropy:
    discriminator: BCE(D(real), 1) + BCE(D(G(z)), 0)      generator: BCE(D(G(z)), 1)
The generator step uses the discriminator just updated, and the same latent vectors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxdl import network_optimizers
from jaxdl.errors import UsageError
from jaxdl.state import TrainState
from jaxdl.tasks.supervised import Metrics, SupervisedTask, masked_sum

NETWORKS = ("generator", "discriminator")


@dataclasses.dataclass(frozen=True)
class Adversarial(SupervisedTask):
    """batch["inputs"]: real images in the range the generator produces ([0, 1] for jaxdl.models.GAN); the
    labels in batch["targets"] are not used."""

    sample_columns: int = 8  # the sample grid written at each evaluation: columns x rows generated images
    sample_rows: int = 8
    eval_seed: int = 0  # the latent vectors of the fakes that evaluation scores (the same at every evaluation)

    def optimizer(
        self, config_optim: ml_collections.ConfigDict, total_steps: int, trainable: Sequence[str]
    ) -> network_optimizers.PerNetwork:
        """The training loop's hook: one optimizer per network instead of one for all parameters."""
        return network_optimizers.from_config(config_optim, total_steps, NETWORKS, trainable)

    def train_step(
        self,
        model: nn.Module,
        tx: network_optimizers.PerNetwork,
        state: TrainState,
        batch: dict,
        rng: jax.Array,
        grad_norm: bool = False,
    ) -> tuple[TrainState, Metrics]:
        if not isinstance(tx, network_optimizers.PerNetwork):  # e.g. wrapped by train.skip_nonfinite
            raise UsageError("the GAN task needs its own per-network optimizer: unset --config.train.skip_nonfinite")
        real = batch["inputs"]
        z = jax.random.normal(jax.random.fold_in(rng, state.step), (real.shape[0], model.latent_dim))
        generate = lambda params: model.apply({"params": params}, z, method="generate")
        discriminate = lambda params, x: model.apply({"params": params}, x, method="discriminate")
        params, opt_state = state.params, state.opt_state

        # Discriminator: real images against the generator's current fakes (no gradient into the generator).
        fake = jax.lax.stop_gradient(generate(params))

        def discriminator_loss(d_params):
            logits = discriminate(
                {**params, "discriminator": d_params}, jnp.concatenate([real.astype(fake.dtype), fake])
            )
            real_logits, fake_logits = jnp.split(logits, 2)
            loss = bce(real_logits, 1.0).mean() + bce(fake_logits, 0.0).mean()
            return loss, (real_logits, fake_logits)

        (d_loss, (real_logits, fake_logits)), d_grads = jax.value_and_grad(discriminator_loss, has_aux=True)(
            params["discriminator"]
        )
        params, opt_state = tx.update_network("discriminator", d_grads, opt_state, params)

        # Generator: make the updated discriminator call the fakes real (the non-saturating loss).
        def generator_loss(g_params):
            with_g = {**params, "generator": g_params}
            return bce(discriminate(with_g, generate(with_g)), 1.0).mean()

        g_loss, g_grads = jax.value_and_grad(generator_loss)(params["generator"])
        params, opt_state = tx.update_network("generator", g_grads, opt_state, params)

        state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        norms = {"d_grad_norm": optax.tree.norm(d_grads), "g_grad_norm": optax.tree.norm(g_grads)} if grad_norm else {}
        return state, {
            "loss": d_loss + g_loss,  # the loop's NaN check and progress bar read "loss": both nets' losses
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_accuracy_real": jnp.mean(real_logits > 0),
            "d_accuracy_fake": jnp.mean(fake_logits < 0),
            **norms,
        }

    def eval_step(self, model: nn.Module, state: TrainState, batch: dict) -> Metrics:
        """Both losses and the discriminator's accuracy on the split's real images and as many fakes (fixed latent
        vectors: every evaluation, and every batch of it, scores the same fakes)."""
        real, mask = batch["inputs"], batch["mask"]
        z = jax.random.normal(jax.random.key(self.eval_seed), (real.shape[0], model.latent_dim))
        fake = model.apply(state.variables, z, method="generate")
        logits = model.apply(state.variables, jnp.concatenate([real.astype(fake.dtype), fake]), method="discriminate")
        real_logits, fake_logits = jnp.split(logits, 2)
        return {
            "d_loss_sum": masked_sum(bce(real_logits, 1.0) + bce(fake_logits, 0.0), mask),
            "g_loss_sum": masked_sum(bce(fake_logits, 1.0), mask),
            "real_correct": masked_sum(real_logits > 0, mask),
            "fake_correct": masked_sum(fake_logits < 0, mask),
            "count": jnp.sum(mask),
        }

    def summarize(self, sums: dict) -> dict[str, float]:
        count = float(sums["count"])
        d_loss, g_loss = float(sums["d_loss_sum"]) / count, float(sums["g_loss_sum"]) / count
        return {
            "loss": d_loss + g_loss,  # as in training; not a measure of sample quality
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_accuracy_real": float(sums["real_correct"]) / count,
            "d_accuracy_fake": float(sums["fake_correct"]) / count,
            "count": int(count),
        }

    def images(self, model: nn.Module, state: TrainState, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
        """Samples from the same latent vectors at every evaluation (the key depends on the seed only)."""
        z = jax.random.normal(rng, (self.sample_rows * self.sample_columns, model.latent_dim))
        samples = model.apply(state.variables, z, method="generate").astype(jnp.float32)
        return {"samples": samples.reshape(self.sample_rows, self.sample_columns, *samples.shape[1:])}


def bce(logits: jax.Array, label: float) -> jax.Array:
    """Sigmoid cross-entropy of each logit against a constant label."""
    return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label))
