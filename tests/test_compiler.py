"""jaxdl.compiler (XLA options for the model steps) and jaxdl.flops.peak_flops (the cached matmul peak)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxdl import compiler, flops


def conv(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_convolutions_compile_to_xla_kernels_not_ynnpack_and_compute_the_same(monkeypatch):
    if jax.devices()[0].platform != "cpu":
        pytest.skip("the options concern XLA:CPU only")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    x = jax.random.normal(jax.random.key(0), (8, 14, 14, 16))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 16, 32))
    default = jax.jit(conv).lower(x, kernel).compile()
    ours = jax.jit(conv, compiler_options=compiler.options()).lower(x, kernel).compile()
    assert "__ynn_fusion" in default.as_text()  # what the options are there to change
    assert "__ynn_fusion" not in ours.as_text() and "convolution(" in ours.as_text()
    np.testing.assert_allclose(ours(x, kernel), default(x, kernel), rtol=1e-5, atol=1e-4)


def test_models_without_convolutions_compile_to_the_same_program(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)

    def mlp_loss(w, x):
        return jnp.sum(jax.nn.relu(x @ w[0]) @ w[1])

    w = (jnp.ones((64, 128)), jnp.ones((128, 10)))
    lowered = jax.jit(jax.grad(mlp_loss)).lower(w, jnp.ones((32, 64)))
    body = lambda compiled: [ln for ln in compiled.as_text().splitlines() if not ln.startswith("HloModule")]
    assert body(lowered.compile(compiler_options=compiler.options())) == body(lowered.compile())


def test_a_users_own_xla_flag_wins(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE")
    assert compiler.options() == {}


def test_peak_flops_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    measured = flops.peak_flops()
    assert measured > 1e8  # a real measurement: any CPU multiplies faster than 0.1 GFLOP/s
    cache = json.loads((tmp_path / "jaxdl" / "peak_flops.json").read_text())
    assert cache == {flops.machine_key(): measured}
    (tmp_path / "jaxdl" / "peak_flops.json").write_text(json.dumps({flops.machine_key(): 123.0}))
    assert flops.peak_flops() == 123.0  # read, not measured again


def test_peak_flops_without_a_writable_cache_still_measures(tmp_path, monkeypatch):
    (tmp_path / "jaxdl").write_text("a file where the cache directory would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert flops.peak_flops() > 1e8
