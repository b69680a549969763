"""The dense layers' matmuls: done on rows, and optionally with bfloat16 operands and float32 results (mixed
precision for these matmuls alone).

Every `dense_dot_general` multiplies x (..., K) reshaped to rows (N, K) by the kernel, so that the weight gradient is
a plain 2-D matmul rather than a contraction over two axes (see `_dense_dot_general`).

`config.dtype=bfloat16` makes every op of a model bfloat16. On XLA:CPU that was slower (1.16x the float32 GPT step):
its elementwise ops and bfloat16-output matmuls have no bfloat16 fast path. A matmul of bfloat16 operands that
accumulates and returns float32 does: YNNPACK runs it on the CPU's bfloat16 dot-product instructions (a 2048^2
matmul at 282-357 vs 172-180 GFLOP/s in float32 on this project's AMD EPYC, BUILD_NOTES.md issue 8). So with
`config.matmul_dtype=bfloat16` a model's `nn.Dense` layers get `dense_dot_general("bfloat16")`: the operands, and in
the backward pass the incoming gradient, are rounded to bfloat16; every product is summed and returned in float32,
and everything between the matmuls (norms, softmax, residual stream, optimizer) stays float32. It is the same
policy as TPUs' default matmul precision, written out so that it holds on every backend.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp


def dense_dot_general(matmul_dtype: str | None) -> Callable:
    """A `dot_general` for `nn.Dense(dot_general=...)`: x (..., K) @ kernel (K, N) as one matmul of x's rows, with the
    operands rounded to `matmul_dtype` (products summed in float32) unless it is empty or float32."""
    low = matmul_dtype and jnp.dtype(matmul_dtype) != jnp.float32
    return functools.partial(_dense_dot_general, dtype=jnp.dtype(matmul_dtype) if low else None)


def _dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, *, dtype):
    """On x reshaped to rows, the weight gradient is a 2-D matmul. Autodiff of the (batch, length, K) form contracts
    two axes at once, which XLA:CPU ran slowly: the GPT's train step ran 1.056x (the reference config) and 1.078x
    (shakespeare_gpt) as fast on rows on a 2-core Xeon (BUILD_NOTES.md, issue 8). A reshape of leading axes is free
    on every backend. Other matmuls go to flax's `lax.dot_general` as they are, in float32."""
    (lhs_contract, rhs_contract), batch = dimension_numbers
    dense = tuple(lhs_contract) == (lhs.ndim - 1,) and tuple(rhs_contract) == (0,) and batch == ((), ())
    if not (dense and rhs.ndim == 2):
        if dtype is not None:
            raise NotImplementedError(f"matmul_dtype supports nn.Dense's matmul (x @ kernel), not {dimension_numbers}")
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type)
    rows = lhs.reshape(-1, lhs.shape[-1])
    if dtype is None:
        out = jax.lax.dot_general(rows, rhs, (((1,), (0,)), ((), ())), precision, preferred_element_type)
    else:
        out = cast_matmul(rows, rhs, dtype).astype(jnp.result_type(lhs, rhs))  # the layer's own dtype again
    return out.reshape(*lhs.shape[:-1], rhs.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def cast_matmul(x: jax.Array, kernel: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """x (..., K) @ kernel (K, N) with both rounded to `dtype`, summed and returned in float32."""
    return jnp.matmul(x.astype(dtype), kernel.astype(dtype), preferred_element_type=jnp.float32)


def _cast_matmul_forward(x, kernel, dtype):
    return cast_matmul(x, kernel, dtype), (x, kernel)


def _cast_matmul_backward(dtype, residuals, grad):
    # Written out rather than left to autodiff: JAX's transpose of a float32-result matmul would multiply the float32
    # gradient by the bfloat16 operand in float32, the slow path (0.947 vs 0.883 of the float32 GPT step).
    x, kernel = residuals
    x_low, kernel_low, grad_low = x.astype(dtype), kernel.astype(dtype), grad.astype(dtype)
    grad_x = jnp.matmul(grad_low, kernel_low.T, preferred_element_type=jnp.float32)
    rows = lambda a: a.reshape(-1, a.shape[-1])
    grad_kernel = jnp.matmul(rows(x_low).T, rows(grad_low), preferred_element_type=jnp.float32)
    return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)


cast_matmul.defvjp(_cast_matmul_forward, _cast_matmul_backward)
