"""Sampling from a GPT: fill the KV cache with the prompt, then one compiled loop of single-token decode steps."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxdl.models.transformer import GPT


def generate(
    model: GPT,
    params: dict,
    prompt: jax.Array,
    length: int,
    rng: jax.Array,
    temperature: float = 1.0,
    top_k: int = 0,
) -> jax.Array:
    """The prompt (batch, P) followed by `length` sampled tokens: int32 (batch, P + length).

    `params` is the model's "params" collection (`state.params`). Each new token is drawn from
    softmax(logits / temperature) restricted to the `top_k` largest logits (0 = no restriction; tokens tied with the
    k-th largest are kept too); temperature 0 means greedy (argmax). Compiled once per (model, prompt shape,
    length, top_k); other temperatures, prompts and keys reuse the compiled loop.
    """
    prompt_length = prompt.shape[1]
    if prompt_length == 0:
        raise ValueError("the prompt must have at least one token per row")
    if length < 0 or top_k < 0:
        raise ValueError(f"length={length} and top_k={top_k} must not be negative")
    if prompt_length + length > model.context:
        raise ValueError(
            f"prompt length {prompt_length} + {length} new tokens = {prompt_length + length} exceeds the model's "
            f"context of {model.context} tokens; shorten the prompt or generate fewer tokens"
        )
    if isinstance(temperature, (int, float)) and temperature < 0:
        raise ValueError(f"temperature={temperature} must not be negative")
    top_k = 0 if top_k >= model.vocab_size else top_k  # keeping every token is no filtering
    return _generate(model, params, jnp.asarray(prompt, jnp.int32), rng, jnp.float32(temperature), length, top_k)


def sample_token(logits: jax.Array, rng: jax.Array, temperature: jax.Array, top_k: int) -> jax.Array:
    """One token per row of logits (batch, vocab): top-k filtered, temperature-scaled; greedy at temperature 0."""
    logits = logits.astype(jnp.float32)
    if top_k:
        kth_largest = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
    # Both branches are computed; the sampled one divides by 1 at temperature 0 so it stays finite.
    sampled = jax.random.categorical(rng, logits / jnp.where(temperature > 0, temperature, 1.0), axis=-1)
    return jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def _generate(model: GPT, params, prompt, rng, temperature, length: int, top_k: int) -> jax.Array:
    if length == 0:
        return prompt
    batch, prompt_length = prompt.shape
    decode = lambda tokens, cache, pos: model.apply({"params": params}, tokens, cache, pos, method=GPT.decode)
    logits, cache = decode(prompt, model.init_cache(batch), 0)  # the whole prompt in one pass
    keys = jax.random.split(rng, length)
    first = sample_token(logits[:, -1], keys[0], temperature, top_k)

    def step(carry, key):
        cache, token, pos = carry  # `token` sits at `pos` and is not in the cache yet
        logits, cache = decode(token[:, None], cache, pos)
        token = sample_token(logits[:, 0], key, temperature, top_k)
        return (cache, token, pos + 1), token

    # length - 1 more steps: the last sampled token is never fed back, so no decode step is wasted.
    _, rest = jax.lax.scan(step, (cache, first, jnp.int32(prompt_length)), keys[1:])
    return jnp.concatenate([prompt, first[:, None], rest.T], axis=1)


def generate_windowed(
    model: GPT, params: dict, prompt: jax.Array, length: int, rng: jax.Array, temperature: float = 1.0, top_k: int = 0
) -> jax.Array:
    """`generate` for any length: whenever the context is full, the cache is refilled from the last half-context of
    tokens and generation goes on (a learned position table cannot slide, so the window restarts at position 0).

    That is one prefill per context/2 new tokens, never one per token. Every window after the first has the same
    shapes, so at most two loops are compiled. Returns int32 (batch, P + length).
    """
    if prompt.shape[1] + length <= model.context:
        return generate(model, params, prompt, length, rng, temperature, top_k)
    keep = max(1, model.context // 2)
    window = prompt if prompt.shape[1] < model.context else prompt[:, -keep:]
    pieces, produced = [jnp.asarray(prompt, jnp.int32)], 0
    while produced < length:
        count = model.context - window.shape[1]  # always fill the window: same shapes, same compiled loop
        new = generate(model, params, window, count, jax.random.fold_in(rng, len(pieces)), temperature, top_k)
        new = new[:, window.shape[1] :]
        pieces.append(new)
        produced += count
        window = jnp.concatenate([window, new], axis=1)[:, -keep:]
    return jnp.concatenate(pieces, axis=1)[:, : prompt.shape[1] + length]
