"""jaxdl.compiler (XLA options for the model steps, the cache of compiled programs) and jaxdl.flops.peak_flops
(the cached matmul peak)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxdl import compiler, flops

from conftest import QUICK, read_metrics, run_cli


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
    assert cache == {compiler.machine_key(): measured}
    (tmp_path / "jaxdl" / "peak_flops.json").write_text(json.dumps({compiler.machine_key(): 123.0}))
    assert flops.peak_flops() == 123.0  # read, not measured again


def test_peak_flops_without_a_writable_cache_still_measures(tmp_path, monkeypatch):
    (tmp_path / "jaxdl").write_text("a file where the cache directory would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert flops.peak_flops() > 1e8


def _cache_files(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.name.endswith(("-cache", "-atime"))}


def test_a_second_run_loads_its_compiled_programs_from_the_cache_and_trains_the_same(tmp_path):
    cache = tmp_path / "xla"
    args = ("--experiment=mnist_cnn", *QUICK, "--config.train.max_steps=4", f"--compilation_cache={cache}")
    first = run_cli(*args, f"--workdir={tmp_path / 'a'}")
    assert first.returncode == 0, first.stderr
    written = _cache_files(cache)
    train_step = [name for name in written if name.startswith("jit_augmented_train_step") and name.endswith("-cache")]
    assert len(train_step) == 1, sorted(written)
    atime = train_step[0].removesuffix("-cache") + "-atime"
    second = run_cli(*args, f"--workdir={tmp_path / 'b'}")
    assert second.returncode == 0, second.stderr
    read_back = _cache_files(cache)
    assert read_back[atime] != written[atime]  # jax stamps an entry's access time when it loads it
    assert read_back[train_step[0]] == written[train_step[0]]  # loaded, not compiled and written again
    losses = lambda run: [m["loss"] for m in read_metrics(tmp_path / run) if m["split"] == "train"]
    assert losses("b") == losses("a") and len(losses("a")) == 2


def test_the_cache_can_be_turned_off_and_defaults_to_one_directory_per_machine(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "home_cache")}
    args = ("--experiment=mnist_cnn", *QUICK, "--config.train.max_steps=2", "--compilation_cache=off")
    done = run_cli(*args, f"--workdir={tmp_path / 'run'}", env=env)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "home_cache" / "jaxdl" / "xla").exists()


@pytest.fixture
def restore_jax_cache_config():
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    names += ("jax_compilation_cache_max_size",)
    before = {name: getattr(jax.config, name) for name in names}
    yield
    for name, value in before.items():
        jax.config.update(name, value)


def test_default_cache_directory_is_per_machine_and_a_users_own_wins(tmp_path, monkeypatch, restore_jax_cache_config):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    jax.config.update("jax_compilation_cache_dir", None)
    directory = compiler.use_compilation_cache()
    assert directory.parent == tmp_path / "jaxdl" / "xla" and directory.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(directory)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "users_own"))
    assert compiler.use_compilation_cache(tmp_path / "other") == tmp_path / "users_own"


def test_a_cache_directory_that_cannot_be_made_means_no_cache(tmp_path, restore_jax_cache_config):
    jax.config.update("jax_compilation_cache_dir", None)
    (tmp_path / "a_file").write_text("")
    assert compiler.use_compilation_cache(tmp_path / "a_file" / "xla") is None
    assert jax.config.jax_compilation_cache_dir is None
