"""jaxdl.compiler (XLA options for the model steps, the cache of compiled programs) and jaxdl.flops.peak_flops
(the cached matmul peak)."""

import ast
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxdl import compiler, flops

from conftest import QUICK, ROOT, read_metrics, run_cli


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


@pytest.mark.parametrize("experiment", ["mnist_cnn", "shakespeare_gpt_reference"])
def test_the_state_initialised_with_once_options_is_bit_identical_to_the_default_compile(experiment):
    """once_options trades the initialisation's compile time for its run time, never its values: every recorded
    figure starts from the same weights as before."""
    import jaxdl
    from jaxdl import training

    run = training.setup(jaxdl.get_config(experiment))
    rng = jax.random.key(7)
    lowered = jax.jit(run.init_state, out_shardings=run.state_sharding).lower(rng)
    default = jax.device_get(lowered.compile()(rng))
    once = jax.device_get(training.initial_state(run, rng))  # what a run starts from
    jax.tree.map(np.testing.assert_array_equal, once, default)
    assert compiler.once_options(run.mesh) == (
        {"xla_backend_optimization_level": 1} if run.mesh.devices.flat[0].platform == "cpu" else {}
    )


def test_peak_flops_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    measured = flops.peak_flops()
    assert measured > 1e8  # a real measurement: any CPU multiplies faster than 0.1 GFLOP/s
    cache = json.loads((tmp_path / "jaxdl" / "peak_flops.json").read_text())
    assert cache == {compiler.machine_key(device_count=False): measured}
    (tmp_path / "jaxdl" / "peak_flops.json").write_text(json.dumps({compiler.machine_key(device_count=False): 123.0}))
    assert flops.peak_flops() == 123.0  # read, not measured again


def test_the_peak_is_kept_once_per_machine_whatever_its_device_count():
    """One device's peak, whatever the count: a two-device run reads the entry a one-device run measured."""
    keys = "[compiler.machine_key(device_count=False), compiler.machine_key()]"
    script = f"import json; from jaxdl import compiler; print(json.dumps({keys}))"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    peak_key, cache_key = json.loads(out.stdout)
    assert peak_key == compiler.machine_key(device_count=False)
    assert cache_key != compiler.machine_key()  # compiled programs are still kept per device count


def test_two_cpus_of_the_same_name_are_different_machines():
    """Compiled programs and the measured peak are kept per CPU: two Xeon generations share one name."""
    entry = (
        "processor\t: {n}\nmodel name\t: Intel(R) Xeon(R) Processor\ncpu family\t: 6\nmodel\t\t: {model}\n"
        "flags\t\t: {flags}\n"
    )
    older = entry.format(n=0, model=106, flags="fpu sse2 avx512f") + "\n" + entry.format(n=1, model=106, flags="x")
    newer = entry.format(n=0, model=207, flags="fpu sse2 avx512f avx512_fp16")
    assert compiler.cpu_description(older) == compiler.cpu_description(
        older.replace("fpu sse2 avx512f", "avx512f fpu sse2")
    )
    assert compiler.cpu_description(older).startswith("Intel(R) Xeon(R) Processor (6/106, flags ")
    assert compiler.cpu_description(older) != compiler.cpu_description(newer)
    same_model_other_flags = entry.format(n=0, model=106, flags="fpu sse2 avx512f avx512_bf16")
    assert compiler.cpu_description(older) != compiler.cpu_description(same_model_other_flags)
    assert compiler.cpu_description("")  # no /proc/cpuinfo (macOS, Windows): still a name


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


def test_the_cache_can_be_turned_off_and_a_directory_that_cannot_be_made_is_bad_input(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "home_cache")}
    args = ("--experiment=mnist_cnn", *QUICK, "--config.train.max_steps=2", "--compilation_cache=off")
    done = run_cli(*args, f"--workdir={tmp_path / 'run'}", env=env)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "home_cache" / "jaxdl" / "xla").exists()
    (tmp_path / "a_file").write_text("")
    done = run_cli(*args, f"--workdir={tmp_path / 'run'}", f"--compilation_cache={tmp_path / 'a_file' / 'xla'}")
    assert done.returncode == 2 and "--compilation_cache=" in done.stderr and len(done.stderr.splitlines()) == 1


@pytest.fixture
def restore_jax_cache_config():
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_compilation_cache_max_size",
    )
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


NOTHING_COMPILES_MID_TRAINING = """
import sys, jax, jaxdl
from pathlib import Path
from jaxdl import training
events = []
jax.monitoring.register_event_duration_secs_listener(
    lambda name, seconds, **kw: events.append("compile") if name.endswith("backend_compile_duration") else None
)
class Marking(training.Reporter):
    def write(self, step, split, metrics):
        events.append(f"{split} {step}")
        super().write(step, split, metrics)
training.Reporter = Marking
config = jaxdl.get_config("mnist_cnn")
config.data.update(train_examples=256, test_examples=100, batch_size=32, eval_batch_size=50)
config.train.update(max_steps=6, log_every_steps=1, eval_every_steps=3)
config.checkpoint.every_steps = 2
jaxdl.train(config, Path(sys.argv[1]))
print(events)
"""


def test_nothing_but_evaluation_compiles_between_the_first_and_the_last_train_step(tmp_path):
    # A fresh process: programs compiled earlier in this one would hide a compile. Checkpoints at steps 2 and 4
    # and an evaluation at step 3 fall inside the span; the evaluation step compiles at its first use (its
    # batches' shapes are known only then), which counts as evaluation time.
    done = subprocess.run(
        [sys.executable, "-c", NOTHING_COMPILES_MID_TRAINING, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "XLA_FLAGS": ""},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    events = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    first, last = events.index("train 1"), events.index("train 6")
    assert "compile" in events[:first]  # the listener hears compiles
    between_train_lines = "|".join(events[first:last]).split("|train ")
    assert [i for i, segment in enumerate(between_train_lines) if "compile" in segment] == [2], events
    assert "eval 3" in between_train_lines[2], events  # the compiles after step 3 are its evaluation's
