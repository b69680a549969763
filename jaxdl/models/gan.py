"""A DCGAN-style generator and discriminator for small images, held in one module so that one train state holds
both: params are {"generator": ..., "discriminator": ...}, and `generate` / `discriminate` run one net each."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.autoencoder import Upsample2x


class Generator(nn.Module):
    """Latent vectors (batch, latent_dim) -> images (batch, H, W, C) in [0, 1].

    DCGAN's shape: a dense projection to an (H / 2**n, W / 2**n, features[0]) map, then n upsampling stages with
    ReLU between them: `Upsample2x` (sub-pixel convolution, much faster than a transposed conv on XLA:CPU) to
    each of features[1:], and a 4x4 transposed conv of stride 2 to C channels through tanh.
    """

    image_shape: Sequence[int]
    features: Sequence[int]
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        height, width, channels = self.image_shape
        stride = 2 ** len(self.features)
        start = (height // stride, width // stride, self.features[0])
        x = nn.Dense(start[0] * start[1] * start[2], dtype=self.dtype)(z.astype(self.dtype))
        x = nn.relu(x).reshape(-1, *start)
        for features in self.features[1:]:
            x = nn.relu(Upsample2x(features, dtype=self.dtype)(x))
        x = nn.ConvTranspose(channels, (4, 4), strides=(2, 2), dtype=self.dtype)(x)
        # tanh, DCGAN's output, rescaled to the data's [0, 1] pixel range.
        return (jnp.tanh(x.astype(jnp.float32)) + 1) / 2


class Discriminator(nn.Module):
    """Images in [0, 1] -> one logit per image (> 0: "real"). 4x4 convolutions of stride 2 with leaky ReLU, then a
    dense layer; no pooling (DCGAN)."""

    features: Sequence[int]
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype) * 2 - 1  # [-1, 1], the range the generator's tanh spans
        for features in self.features:
            x = nn.leaky_relu(nn.Conv(features, (4, 4), strides=(2, 2), dtype=self.dtype)(x), 0.2)
        return nn.Dense(1, dtype=self.dtype)(x.reshape(x.shape[0], -1))[:, 0].astype(jnp.float32)


class GAN(nn.Module):
    """Both networks of a GAN. `generate(z)` and `discriminate(x)` apply one each (through
    `model.apply(variables, z, method="generate")`). Calling the module on images, like any other jaxdl model,
    runs both — what `init` and the model summary need."""

    image_shape: Sequence[int] = (28, 28, 1)  # (H, W, C); H and W divisible by 2 ** len(generator_features)
    latent_dim: int = 64
    generator_features: Sequence[int] = (64, 32)  # channels of the projected map, then of each upsampling stage
    discriminator_features: Sequence[int] = (32, 64)
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.generator = Generator(self.image_shape, self.generator_features, self.dtype)
        self.discriminator = Discriminator(self.discriminator_features, self.dtype)

    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """(discriminator logits of the images x, as many images generated from zero latent vectors)."""
        return self.discriminate(x), self.generate(jnp.zeros((x.shape[0], self.latent_dim), jnp.float32))

    def generate(self, z: jax.Array) -> jax.Array:
        return self.generator(z)

    def discriminate(self, x: jax.Array) -> jax.Array:
        return self.discriminator(x)
