"""A convolutional autoencoder for small images: strided convs down to a latent vector, transposed convs back up."""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class ConvAutoencoder(nn.Module):
    """(batch, H, W, C) images in [0, 1] -> reconstructions of the same shape, through a `latent`-sized code.

    Each of the `features` stages halves height and width (3x3 conv, stride 2) on the way down and doubles them on
    the way up (`Upsample2x`; the last stage a 4x4 transposed conv of stride 2 to the images' channels), so H and W
    must be divisible by 2 ** len(features) (28 -> 14 -> 7 for MNIST with two stages). A sigmoid keeps the output
    in the data's [0, 1] range. GELU, not ReLU, between layers: with ReLU a run at learning rate 2e-3 collapsed to
    a constant output (gradient norm 3e-9 by step 40) and another sat on the mean image for 100 steps; GELU's
    gradient is never exactly zero. `encode` and `decode` work on their own
    (`model.apply(variables, x, method="encode")`).
    """

    image_shape: Sequence[int] = (28, 28, 1)  # (H, W, C) of the images
    features: Sequence[int] = (16, 32)
    latent: int = 32  # size of the bottleneck code; 0 = no dense bottleneck (the last feature map is the code)
    dtype: jnp.dtype = jnp.float32  # compute dtype; parameters are always float32

    def setup(self):
        height, width, channels = self.image_shape
        stride = 2 ** len(self.features)
        if height % stride or width % stride:
            raise ValueError(f"image size {height}x{width} is not divisible by 2 ** {len(self.features)} stages")
        self.feature_shape = (height // stride, width // stride, self.features[-1])
        self.down = [nn.Conv(f, (3, 3), strides=(2, 2), dtype=self.dtype) for f in self.features]
        # Back up through the same channel counts in reverse, the last layer to the images' channel count.
        self.up = [Upsample2x(f, dtype=self.dtype) for f in reversed(self.features[:-1])]
        self.to_image = nn.ConvTranspose(channels, (4, 4), strides=(2, 2), dtype=self.dtype)
        if self.latent:
            self.to_code = nn.Dense(self.latent, dtype=self.dtype)
            self.from_code = nn.Dense(math.prod(self.feature_shape), dtype=self.dtype)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.decode(self.encode(x))

    def encode(self, x: jax.Array) -> jax.Array:
        """The code of each image: (batch, latent), or the last feature map when latent is 0."""
        x = x.astype(self.dtype)
        for conv in self.down:
            x = nn.gelu(conv(x))
        return self.to_code(x.reshape(x.shape[0], -1)) if self.latent else x

    def decode(self, code: jax.Array) -> jax.Array:
        """Images in [0, 1] (float32) from codes."""
        x = nn.gelu(self.from_code(code)).reshape(-1, *self.feature_shape) if self.latent else code
        for upsample in self.up:
            x = nn.gelu(upsample(x))
        return nn.sigmoid(self.to_image(x).astype(jnp.float32))


class Upsample2x(nn.Module):
    """Twice the height and width: a 3x3 conv to 4 x `features` channels at the input's resolution, then each
    pixel's channels laid out as a 2x2 block (sub-pixel convolution, Shi et al. 2016; `depth_to_space`).

    Used instead of a 4x4 transposed conv of stride 2 because XLA:CPU runs those slowly when they have many
    output channels: forward + backward at batch 64, 7x7x128 -> 14x14x64 took 1023 ms as a transposed conv and
    157 ms like this; 7x7x64 -> 14x14x32: 217 vs 37 ms (BUILD_NOTES.md). To 1 channel the transposed conv was
    the faster one (8 vs 19 ms), so models keep it for their last layer.
    """

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(4 * self.features, (3, 3), dtype=self.dtype)(x)
        b, h, w, _ = x.shape
        x = x.reshape(b, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(b, 2 * h, 2 * w, self.features)
