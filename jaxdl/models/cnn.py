"""A plain convolutional classifier: [conv 3x3 -> (batch norm) -> relu -> max-pool 2x2] per stage, then dense."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


class CNN(nn.Module):
    num_classes: int
    features: Sequence[int] = (32, 64)  # channels of each conv stage; each stage halves height and width
    dense: int = 128  # width of the hidden dense layer; 0 = none
    batch_norm: bool = False
    dropout: float = 0.0  # before the last layer
    dtype: jnp.dtype = jnp.float32  # compute dtype; parameters are always float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = x.astype(self.dtype)
        for features in self.features:
            # With batch norm right after, a conv bias would be cancelled by the mean subtraction.
            conv = nn.Conv(
                features, (3, 3), use_bias=not self.batch_norm, dtype=self.dtype, conv_general_dilated=conv2d
            )
            x = conv(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
            x = max_pool_2x2(nn.relu(x))
        x = x.reshape(x.shape[0], -1)
        if self.dense:
            x = nn.relu(nn.Dense(self.dense, dtype=self.dtype)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pooling, stride 2. As a reshape and a max where height and width are even: on XLA:CPU its gradient
    was 9x cheaper than nn.max_pool's (5.4 vs 49 ms at 128x28x28x32; BUILD_NOTES.md)."""
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        return nn.max_pool(x, (2, 2), strides=(2, 2))
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


NHWC = ("NHWC", "HWIO", "NHWC")


def conv2d(lhs: jax.Array, rhs: jax.Array, window_strides, padding, **options) -> jax.Array:
    """`lax.conv_general_dilated` as nn.Conv calls it, with a faster path for one input channel (grayscale images).

    XLA:CPU convolved a 128x28x28x1 batch to 16 channels in 3.5-3.7 ms (~8 GFLOP/s): a quarter of the whole mnist_cnn
    step. As a sum of the 9 shifted copies of the input times each tap's weights (`single_channel_conv`) it is one
    elementwise pass, 0.3-0.4 ms (BUILD_NOTES.md, issue 8). Every other convolution is XLA's own."""
    unit = lambda values: values is None or all(v == 1 for v in values)
    if (
        lhs.ndim == 4
        and rhs.shape[2] == 1
        and unit(window_strides)
        and unit(options.get("lhs_dilation"))
        and unit(options.get("rhs_dilation"))
        and options.get("feature_group_count", 1) == 1
        and options.get("dimension_numbers") == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
    ):
        if isinstance(padding, str):
            padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
        return single_channel_conv(lhs, rhs, tuple(map(tuple, padding)))
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **options)


def _taps(x: jax.Array, kernel_size: tuple[int, int], padding: tuple) -> list[jax.Array]:
    """The padded input shifted under each tap of the kernel (row-major): kh*kw arrays shaped like the output."""
    (top, bottom), (left, right) = padding
    padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    height, width = padded.shape[1] - kernel_size[0] + 1, padded.shape[2] - kernel_size[1] + 1
    return [padded[:, i : i + height, j : j + width] for i in range(kernel_size[0]) for j in range(kernel_size[1])]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def single_channel_conv(x: jax.Array, kernel: jax.Array, padding: tuple) -> jax.Array:
    """Stride-1 convolution of x (N, H, W, 1) with kernel (kh, kw, 1, C), summed over the taps in float32."""
    weights = kernel.reshape(-1, kernel.shape[-1]).astype(jnp.float32)
    out = sum(tap.astype(jnp.float32) * weights[k] for k, tap in enumerate(_taps(x, kernel.shape[:2], padding)))
    return out.astype(jnp.result_type(x, kernel))


def _single_channel_conv_forward(x, kernel, padding):
    return single_channel_conv(x, kernel, padding), (x, kernel)


def _single_channel_conv_backward(padding, residuals, grad):
    # XLA's own gradients: its kernel gradient (0.9-1.1 ms) beat this sum's autodiff, the taps as a matmul, and
    # per-tap reductions (1.3-3.6 ms; BUILD_NOTES.md). The input's is only computed when something uses it.
    x, kernel = residuals
    _, vjp = jax.vjp(lambda x, k: lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=NHWC), x, kernel)
    return vjp(grad)


single_channel_conv.defvjp(_single_channel_conv_forward, _single_channel_conv_backward)
