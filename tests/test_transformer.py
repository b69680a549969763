import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.models import precision
from jaxdl.models.transformer import GPT, attention
from jaxdl.sampling import generate

VOCAB, CONTEXT, WIDTH, LAYERS = 11, 16, 32, 2
TINY = dict(vocab_size=VOCAB, context=CONTEXT, num_layers=LAYERS, num_heads=2, width=WIDTH)


# Everything runs jitted: on CPU a tiny model's eager op-by-op dispatch is slower than compiling it.
def init(model: GPT, seed: int = 0) -> dict:
    rng = jax.random.key(seed)
    tokens = jnp.zeros((1, CONTEXT), jnp.int32)
    return jax.jit(lambda rng: model.init({"params": rng, "dropout": rng}, tokens, train=False))(rng)


def jitted(model: GPT):
    return jax.jit(model.apply, static_argnames=("train", "method"))


@pytest.fixture(scope="module")
def tiny():
    model = GPT(**TINY)
    variables = init(model)
    forward = functools.partial(jitted(model), train=False)
    return model, variables, forward


def random_tokens(shape, seed=0):
    return jax.random.randint(jax.random.key(seed), shape, 0, VOCAB, jnp.int32)


@pytest.mark.parametrize("tie", [True, False])
def test_shapes_dtype_and_parameter_count(tie):
    model = GPT(**TINY, tie_embeddings=tie)
    variables = init(model)
    logits = jitted(model)(variables, random_tokens((3, 7)), train=False)
    assert logits.shape == (3, 7, VOCAB) and logits.dtype == jnp.float32
    # Per block: 2 LayerNorms (scale + bias), query/key/value/out W x W + bias, mlp_in W x 4W + 4W, mlp_out 4W x W + W.
    per_block = (
        2 * 2 * WIDTH + 4 * (WIDTH * WIDTH + WIDTH) + (WIDTH * 4 * WIDTH + 4 * WIDTH) + (4 * WIDTH * WIDTH + WIDTH)
    )
    expected = VOCAB * WIDTH + CONTEXT * WIDTH + LAYERS * per_block + 2 * WIDTH + (0 if tie else WIDTH * VOCAB)
    assert sum(x.size for x in jax.tree.leaves(variables["params"])) == expected
    assert set(variables) == {"params"}
    # The names weight-decay masks and LoRA select by.
    params = variables["params"]
    assert set(params) == {"token_embed", "position_embed", "final_norm", "blocks_0", "blocks_1"} | (
        set() if tie else {"lm_head"}
    )
    assert set(params["blocks_0"]) == {"attn_norm", "attn", "mlp_norm", "mlp_in", "mlp_out"}
    assert set(params["blocks_0"]["attn"]) == {"query", "key", "value", "out"}


def test_longer_than_context_is_an_error(tiny):
    model, variables, _ = tiny
    with pytest.raises(ValueError, match="exceeds the model's context"):
        model.apply(variables, random_tokens((1, CONTEXT + 1)), train=False)


def test_changing_a_future_token_never_changes_earlier_logits(tiny):
    _, variables, forward = tiny
    tokens = random_tokens((2, CONTEXT))
    logits = forward(variables, tokens)
    for t in (0, 5, CONTEXT - 1):
        changed = forward(variables, tokens.at[:, t].set((tokens[:, t] + 1) % VOCAB))
        np.testing.assert_allclose(changed[:, :t], logits[:, :t], atol=1e-6)
        assert np.abs(changed[:, t] - logits[:, t]).max() > 1e-4  # the changed position itself does move


def test_kv_cache_decoder_matches_the_full_forward_pass(tiny):
    model, variables, forward = tiny
    tokens = random_tokens((3, CONTEXT), seed=1)
    full = forward(variables, tokens)
    decode = functools.partial(jitted(model), method=GPT.decode)
    prefill = 5  # the prompt in one pass, then one token at a time
    logits, cache = decode(variables, tokens[:, :prefill], model.init_cache(3), 0)
    steps = [logits]
    for pos in range(prefill, CONTEXT):
        logits, cache = decode(variables, tokens[:, pos : pos + 1], cache, pos)
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)
    assert len(cache) == LAYERS and cache[0]["key"].shape == (3, CONTEXT, 2, WIDTH // 2)


def greedy_by_full_forward(forward, variables, prompt, length):
    # Re-runs the whole sequence per token, padded to the full context (so one compilation): by causality the
    # padding does not change the logits at the last real position.
    tokens = jnp.zeros((prompt.shape[0], CONTEXT), jnp.int32).at[:, : prompt.shape[1]].set(prompt)
    for t in range(prompt.shape[1], prompt.shape[1] + length):
        tokens = tokens.at[:, t].set(jnp.argmax(forward(variables, tokens)[:, t - 1], axis=-1))
    return tokens[:, : prompt.shape[1] + length]


def test_greedy_generation_equals_step_by_step_argmax(tiny):
    model, variables, forward = tiny
    prompt, length = random_tokens((2, 3), seed=2), 8
    expected = greedy_by_full_forward(forward, variables, prompt, length)
    top1 = generate(model, variables["params"], prompt, length, jax.random.key(0), top_k=1)
    assert top1.dtype == jnp.int32 and top1.shape == (2, 3 + length)
    np.testing.assert_array_equal(top1, expected)
    other_key = generate(model, variables["params"], prompt, length, jax.random.key(7), temperature=5.0, top_k=1)
    np.testing.assert_array_equal(other_key, expected)  # top_k=1 is greedy whatever the key and temperature
    zero_temperature = generate(model, variables["params"], prompt, length, jax.random.key(1), temperature=0.0)
    np.testing.assert_array_equal(zero_temperature, expected)


def test_top_k_samples_only_among_the_k_largest_logits(tiny):
    model, variables, forward = tiny
    prompt, length, k = random_tokens((2, 1), seed=3), CONTEXT - 1, 3

    def ranks(out):  # how many logits beat each new token's, from the logits it was drawn from
        logits = forward(variables, out)[:, :-1]
        return jnp.sum(logits > jnp.take_along_axis(logits, out[:, 1:, None], -1), axis=-1)

    out = generate(model, variables["params"], prompt, length, jax.random.key(0), temperature=3.0, top_k=k)
    assert int(ranks(out).max()) == k - 1  # always among the k largest, and not always the largest
    unfiltered = generate(model, variables["params"], prompt, length, jax.random.key(0), temperature=3.0)
    assert int(ranks(unfiltered).max()) >= k  # without top_k, tokens outside the top k do come up


def test_generate_checks_its_arguments_and_compiles_once(tiny):
    model, variables, _ = tiny
    params, prompt = variables["params"], random_tokens((2, 4))
    with pytest.raises(ValueError, match="exceeds the model's context of 16"):
        generate(model, params, prompt, CONTEXT - 3, jax.random.key(0))
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, params, prompt[:, :0], 3, jax.random.key(0))
    assert generate(model, params, prompt, CONTEXT - 4, jax.random.key(0)).shape == (2, CONTEXT)  # exactly full
    np.testing.assert_array_equal(generate(model, params, prompt, 0, jax.random.key(0)), prompt)
    from jaxdl.sampling import _generate

    before = _generate._cache_size()
    for seed, temperature in [(1, 0.5), (2, 1.0), (3, 0.0)]:
        generate(model, params, random_tokens((2, 4), seed), 5, jax.random.key(seed), temperature=temperature)
    assert _generate._cache_size() == before + 1  # new prompts, keys and temperatures reuse one compilation


def test_dropout_only_in_training(tiny):
    _, variables, _ = tiny  # dropout adds no parameters
    tokens, apply = random_tokens((2, 8)), jitted(GPT(**TINY, dropout=0.2))
    train = lambda seed: apply(variables, tokens, train=True, rngs={"dropout": jax.random.key(seed)})
    assert np.abs(train(0) - train(1)).max() > 1e-3
    np.testing.assert_array_equal(train(0), train(0))
    eval_logits = apply(variables, tokens, train=False)  # needs no dropout key
    np.testing.assert_array_equal(eval_logits, apply(variables, tokens, train=False))
    no_dropout = jitted(GPT(**TINY))  # same parameters; train=True without dropout is the eval forward
    np.testing.assert_allclose(no_dropout(variables, tokens, train=True), eval_logits, atol=1e-6)


def test_training_attention_path_agrees_with_eval_path(tiny):
    # With dropout > 0 training uses flax's attention (it has weight dropout), eval uses jax.nn's. A rate so small
    # that float32 keeps every weight exercises the training path's masking against the eval one.
    _, variables, forward = tiny
    tokens = random_tokens((2, CONTEXT), seed=4)
    model = GPT(**TINY, dropout=1e-9)
    logits = jitted(model)(variables, tokens, train=True, rngs={"dropout": jax.random.key(0)})
    np.testing.assert_allclose(logits, forward(variables, tokens), atol=1e-5)


@pytest.mark.parametrize("length", [8, 3])  # the full causal square; a decode chunk at position 5 of a cache
def test_attention_equals_jax_nn_dot_product_attention(length):
    # The model's own attention replaces jax.nn's for speed (BUILD_NOTES, issue 8); it must be the same function,
    # values and gradients, in float32 and with bfloat16 inputs.
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(key, (2, n, 3, 4)) for key, n in zip(keys[:3], (length, 8, 8), strict=True))
    cotangent = jax.random.normal(keys[3], q.shape)
    pos = 8 - length
    mask = (jnp.arange(8)[None, :] <= pos + jnp.arange(length)[:, None])[None, None]
    ours = lambda q, k, v: attention(q, k, v, mask)
    theirs = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask)
    np.testing.assert_allclose(jax.jit(ours)(q, k, v), theirs(q, k, v), atol=1e-6)
    pullback = lambda f: jax.jit(lambda *x: jax.vjp(f, *x)[1](cotangent))(q, k, v)
    for ours_grad, their_grad in zip(pullback(ours), pullback(theirs), strict=True):
        np.testing.assert_allclose(ours_grad, their_grad, atol=1e-5)
    half = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    assert ours(*half).dtype == jnp.bfloat16
    np.testing.assert_allclose(ours(*half).astype(np.float32), theirs(*half).astype(np.float32), atol=1e-2)


def test_bfloat16_compute_with_float32_parameters(tiny):
    _, variables, forward = tiny
    model = GPT(**TINY, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(lambda: init(model))  # dtypes without running anything
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes["params"]))
    tokens = random_tokens((2, CONTEXT), seed=5)
    logits = jitted(model)(variables, tokens, train=False)
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, forward(variables, tokens), atol=0.05)
    assert model.init_cache(2)[0]["key"].dtype == jnp.bfloat16
    out = generate(model, variables["params"], tokens[:, :4], 6, jax.random.key(0), top_k=1)
    assert out.shape == (2, 10) and bool(jnp.all((out >= 0) & (out < VOCAB)))


def test_learns_a_repeated_sequence_with_adamw(tiny):
    model = GPT(**TINY, dropout=0.1)
    tokens = jnp.tile(jnp.arange(VOCAB, dtype=jnp.int32), 2)[None, : CONTEXT + 1].repeat(4, axis=0)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    params = tiny[1]["params"]  # dropout adds no parameters
    tx = optax.adamw(1e-2)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, rng):
        def loss_fn(params):
            logits = model.apply({"params": params}, inputs, train=True, rngs={"dropout": rng})
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for i in range(30):
        params, opt_state, loss = step(params, opt_state, jax.random.key(i))
        losses.append(float(loss))
    assert losses[0] == pytest.approx(np.log(VOCAB), abs=0.2)  # small init: near-uniform predictions at first
    assert losses[-1] < 0.2 * losses[0]


def test_cast_matmul_rounds_operands_and_gradients_to_bfloat16_and_sums_in_float32():
    kx, kk, kg = jax.random.split(jax.random.key(7), 3)
    x, kernel = jax.random.normal(kx, (3, 5, 40)), jax.random.normal(kk, (40, 24))
    grad = jax.random.normal(kg, (3, 5, 24))
    rounded = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)
    out, vjp = jax.vjp(lambda a, b: precision.cast_matmul(a, b, jnp.bfloat16), x, kernel)
    grad_x, grad_kernel = vjp(grad)
    assert out.dtype == grad_x.dtype == grad_kernel.dtype == jnp.float32
    np.testing.assert_allclose(out, rounded(x) @ rounded(kernel), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_x, rounded(grad) @ rounded(kernel).T, rtol=1e-5, atol=1e-5)
    expected = jnp.einsum("bti,bto->io", rounded(x), rounded(grad))
    np.testing.assert_allclose(grad_kernel, expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(NotImplementedError):
        precision.dense_dot_general("bfloat16")(x, kernel.T, (((2,), (1,)), ((), ())))


@pytest.mark.parametrize("matmul_dtype", ["", "float32"])
def test_float32_dense_matmul_multiplies_rows_forward_and_backward(matmul_dtype):
    kx, kk = jax.random.split(jax.random.key(8))
    x, kernel = jax.random.normal(kx, (3, 5, 40)), jax.random.normal(kk, (40, 24))
    dot_general = precision.dense_dot_general(matmul_dtype)
    dense = lambda x, kernel: dot_general(x, kernel, (((2,), (0,)), ((), ())))
    reference = lambda x, kernel: jnp.einsum("bti,io->bto", x, kernel)
    np.testing.assert_allclose(dense(x, kernel), reference(x, kernel), rtol=1e-5, atol=1e-5)
    loss = lambda f: lambda x, kernel: jnp.sum(jnp.sin(f(x, kernel)))
    grads, expected = jax.grad(loss(dense), (0, 1))(x, kernel), jax.grad(loss(reference), (0, 1))(x, kernel)
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # The weight gradient is rows.T @ rows: no matmul, forward or backward, contracts more than one axis (the
    # reference's weight gradient contracts two, the form XLA:CPU ran slowly)
    contracted = lambda f: [
        len(e.params["dimension_numbers"][0][0])
        for e in jax.make_jaxpr(jax.grad(loss(f), (0, 1)))(x, kernel).eqns
        if e.primitive.name == "dot_general"
    ]
    assert contracted(dense) == [1, 1, 1] and sorted(contracted(reference)) == [1, 1, 2]


def test_bfloat16_matmuls_every_dense_matmul_forward_and_backward(tiny):
    _, variables, forward = tiny
    model = GPT(**TINY, matmul_dtype="bfloat16")
    assert jax.tree.map(jnp.shape, init(model)) == jax.tree.map(jnp.shape, variables)  # same parameters, float32
    tokens = random_tokens((2, CONTEXT + 1), seed=6)

    def loss(model, params):
        logits = model.apply({"params": params}, tokens[:, :-1], train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    low, full = functools.partial(loss, model), functools.partial(loss, GPT(**TINY))
    bf16_dots = lambda f: len(
        re.findall(
            r"dot_general.*\(tensor<[^>]*bf16>, tensor<[^>]*bf16>\) -> tensor<[^>]*f32>",
            jax.jit(jax.grad(f)).lower(variables["params"]).as_text(),
        )
    )
    # 6 dense layers per block (query, key, value, out, mlp_in, mlp_out), 3 matmuls each: forward, two gradients
    assert bf16_dots(low) == 3 * 6 * LAYERS and bf16_dots(full) == 0
    np.testing.assert_allclose(jax.jit(low)(variables["params"]), jax.jit(full)(variables["params"]), rtol=1e-2)
    grads_low, grads_full = jax.jit(jax.grad(low))(variables["params"]), jax.jit(jax.grad(full))(variables["params"])
    cosine = optax.tree.vdot(grads_low, grads_full) / (optax.tree.norm(grads_low) * optax.tree.norm(grads_full))
    assert cosine > 0.99, cosine
    logits = jitted(model)(variables, tokens[:, :-1], train=False)
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, forward(variables, tokens[:, :-1]), atol=0.05)
