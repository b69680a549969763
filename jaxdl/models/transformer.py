"""A decoder-only Transformer language model (GPT): pre-LayerNorm blocks, learned positions, a KV-cache decoder.

`GPT(...)(tokens, train)` gives next-token logits for every position, the signature the standard train step
calls. `GPT.decode` runs the same weights on a few new tokens at position `pos`, reading and writing a KV cache
passed in and out as a plain pytree (see `init_cache`), so generation never re-runs the whole context
(`jaxdl/sampling.py`).

Parameter paths are chosen for masks by name: `token_embed`, `position_embed`, `blocks_N/attn/{query,key,value,out}`,
`blocks_N/{mlp_in,mlp_out}`, the LayerNorms' `scale`/`bias`. Every projection is an `nn.Dense` with a 2-D kernel.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.precision import dense_dot_general

# Per layer: {"key": (batch, context, heads, head_dim), "value": same}, in the model's compute dtype.
Cache = tuple[dict[str, jax.Array], ...]

# GPT-2's initialisation: small normal weights everywhere. Flax's default embedding init (std 1) would make tied
# output logits ~sqrt(width) large at step 0.
INIT = nn.initializers.normal(stddev=0.02)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax attention of q (batch, length, heads, head_dim) over k, v (batch, keys, heads, head_dim) where `mask`
    (broadcastable to (batch, heads, length, keys)) is True; scores and softmax in float32, the result in q's dtype.

    The same function as `jax.nn.dot_product_attention(q, k, v, mask=mask)`, written out with the heads moved in
    front: XLA's CPU compiler made jax.nn's (which adds an axis for grouped heads) into a slow 5-D reduction in the
    softmax's backward pass. The reference GPT's train step ran 1.07x as fast with this one on a 2-core Xeon
    (BUILD_NOTES.md, issue 8). jax.nn's default (`implementation=None`) is plain XLA ops on every platform too, so
    no fused kernel is given up on GPU or TPU.
    """
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # (batch, heads, length, head_dim)
    scores = jnp.matmul(q, k.transpose(0, 1, 3, 2), preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
    weights = jax.nn.softmax(jnp.where(mask, scores, jnp.finfo(jnp.float32).min), axis=-1)
    return jnp.matmul(weights.astype(v.dtype), v).transpose(0, 2, 1, 3)


class CausalSelfAttention(nn.Module):
    num_heads: int
    width: int
    dropout: float
    residual_std: float  # init of the layers that write into the residual stream
    dtype: jnp.dtype
    matmul_dtype: str = ""  # the projections' matmul operands (jaxdl.models.precision); "" = dtype

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, pos: jax.Array | int, cache: dict | None):
        batch, length, _ = x.shape
        dot_general = dense_dot_general(self.matmul_dtype)
        heads = lambda y: y.reshape(batch, length, self.num_heads, self.width // self.num_heads)
        # Separate query/key/value layers (not one fused qkv) so LoRA can target e.g. only query and value.
        q, k, v = (
            heads(nn.Dense(self.width, kernel_init=INIT, dtype=self.dtype, dot_general=dot_general, name=n)(x))
            for n in ("query", "key", "value")
        )
        if cache is not None:  # write this chunk's keys and values at [pos, pos + length), attend over the cache
            k = jax.lax.dynamic_update_slice(cache["key"], k.astype(cache["key"].dtype), (0, pos, 0, 0))
            v = jax.lax.dynamic_update_slice(cache["value"], v.astype(cache["value"].dtype), (0, pos, 0, 0))
            cache = {"key": k, "value": v}
        # Query i sits at position pos + i and may see keys at positions <= its own; beyond that the cache is empty.
        mask = jnp.arange(k.shape[1])[None, :] <= pos + jnp.arange(length)[:, None]
        mask = mask[None, None]  # broadcast over batch and heads
        if train and self.dropout > 0:
            # `attention` has no dropout on the attention weights; flax's (unfused) one does. Both take the softmax
            # in float32.
            y = nn.dot_product_attention(
                q,
                k,
                v,
                mask=mask,
                dropout_rng=self.make_rng("dropout"),
                dropout_rate=self.dropout,
                deterministic=False,
                force_fp32_for_softmax=True,
            )
        else:
            y = attention(q, k.astype(q.dtype), v.astype(q.dtype), mask)
        out_init = nn.initializers.normal(self.residual_std)
        out = nn.Dense(self.width, kernel_init=out_init, dtype=self.dtype, dot_general=dot_general, name="out")
        y = out(y.reshape(batch, length, self.width))
        return nn.Dropout(self.dropout, deterministic=not train)(y), cache


class Block(nn.Module):
    """x + attn(LN(x)), then x + mlp(LN(x)); dropout on each residual branch."""

    num_heads: int
    width: int
    mlp_ratio: int
    dropout: float
    residual_std: float  # init of the layers that write into the residual stream
    dtype: jnp.dtype
    matmul_dtype: str = ""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, pos: jax.Array | int, cache: dict | None):
        dense = lambda features, init, name: nn.Dense(
            features, kernel_init=init, dtype=self.dtype, dot_general=dense_dot_general(self.matmul_dtype), name=name
        )
        attn = CausalSelfAttention(
            self.num_heads, self.width, self.dropout, self.residual_std, self.dtype, self.matmul_dtype, name="attn"
        )
        y, cache = attn(nn.LayerNorm(dtype=self.dtype, name="attn_norm")(x), train, pos, cache)
        x = x + y
        y = nn.LayerNorm(dtype=self.dtype, name="mlp_norm")(x)
        y = nn.gelu(dense(self.mlp_ratio * self.width, INIT, "mlp_in")(y))
        y = dense(self.width, nn.initializers.normal(self.residual_std), "mlp_out")(y)
        return x + nn.Dropout(self.dropout, deterministic=not train)(y), cache


class GPT(nn.Module):
    vocab_size: int
    context: int  # the longest sequence: the size of the position table and of the KV cache
    num_layers: int = 4
    num_heads: int = 4
    width: int = 128
    mlp_ratio: int = 4
    dropout: float = 0.0  # on the embeddings, the attention weights and each residual branch (nanoGPT's places)
    # Tied (GPT-2, nanoGPT): the output layer reuses the token embedding. It halves the embedding parameters, which
    # dominate a small model with a word-piece vocabulary, and is the standard baseline; for a 65-character vocabulary
    # either choice costs little.
    tie_embeddings: bool = True
    dtype: jnp.dtype = jnp.float32  # compute dtype; parameters are always float32, logits are returned in float32
    # "bfloat16": the dense layers' matmuls take bfloat16 operands and return float32, everything else stays in
    # `dtype` (jaxdl.models.precision): 0.88x the float32 step time on a 2-core AMD EPYC, but 1.2x on a 2-core Xeon
    # without AMX, whose bfloat16 dot instructions do not pay at this model's sizes (BUILD_NOTES.md). "" = dtype.
    matmul_dtype: str = ""

    def setup(self):
        if self.width % self.num_heads:
            raise ValueError(f"width={self.width} is not a multiple of num_heads={self.num_heads}")
        self.token_embed = nn.Embed(self.vocab_size, self.width, embedding_init=INIT, dtype=self.dtype)
        self.position_embed = nn.Embed(self.context, self.width, embedding_init=INIT, dtype=self.dtype)
        self.embed_dropout = nn.Dropout(self.dropout)
        # GPT-2 scales the layers that write into the residual stream by 1/sqrt(2 * layers), one per branch, so the
        # stream's variance at initialisation does not grow with depth.
        residual_std = 0.02 / (2 * self.num_layers) ** 0.5
        self.blocks = [
            Block(self.num_heads, self.width, self.mlp_ratio, self.dropout, residual_std, self.dtype, self.matmul_dtype)
            for _ in range(self.num_layers)
        ]
        self.final_norm = nn.LayerNorm(dtype=self.dtype)
        if not self.tie_embeddings:
            self.lm_head = nn.Dense(
                self.vocab_size,
                use_bias=False,
                kernel_init=INIT,
                dtype=self.dtype,
                dot_general=dense_dot_general(self.matmul_dtype),
            )

    def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
        """Logits (batch, length, vocab_size), float32, for int tokens (batch, length); position i sees 0..i."""
        if tokens.shape[1] > self.context:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds the model's context {self.context}")
        return self._forward(tokens, train, 0, None)[0]

    def decode(self, tokens: jax.Array, cache: Cache, pos: jax.Array | int) -> tuple[jax.Array, Cache]:
        """Logits for tokens (batch, length) at positions pos..pos+length-1, given the cache of positions < pos.

        Returns the logits (batch, length, vocab_size) and the cache with these tokens' keys and values added.
        Call with `model.apply(variables, tokens, cache, pos, method=GPT.decode)`; length 1 is one generation step,
        the whole prompt at pos 0 fills the cache. pos may be traced; pos + length must not exceed `context`
        (not checked here: a traced pos cannot be).
        """
        return self._forward(tokens, False, pos, cache)

    def init_cache(self, batch_size: int) -> Cache:
        """An empty KV cache for `decode`: zeros, one {"key", "value"} pair per layer."""
        shape = (batch_size, self.context, self.num_heads, self.width // self.num_heads)
        return tuple(
            {"key": jnp.zeros(shape, self.dtype), "value": jnp.zeros(shape, self.dtype)} for _ in range(self.num_layers)
        )

    def _forward(self, tokens, train, pos, cache):
        positions = pos + jnp.arange(tokens.shape[1])
        x = self.token_embed(tokens) + self.position_embed(positions)[None]
        x = self.embed_dropout(x, deterministic=not train)
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, train, pos, None if cache is None else cache[i])
            new_cache.append(layer_cache)
        x = self.final_norm(x)
        logits = self.token_embed.attend(x) if self.tie_embeddings else self.lm_head(x)
        return logits.astype(jnp.float32), None if cache is None else tuple(new_cache)
