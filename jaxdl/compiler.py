"""How jaxdl compiles: the XLA compiler options of its model steps, and the on-disk cache of compiled programs.

On CPU, jaxlib 0.10.2 hands convolutions to YNNPACK ("YNN fusions") by default. On this project's 2-core AMD EPYC,
XLA's own (Eigen) convolutions ran every convolutional train step faster: mnist_cnn 12-16%, the autoencoder, the
GAN and the 32/64-channel split pre-training model 23-26% (interleaved in one process, BUILD_NOTES.md issue 8).
Reductions and dots stay with YNNPACK, the default for them, so a model without convolutions compiles to exactly
the program it compiled to before. A user's own `--xla_cpu_experimental_ynn_fusion_type` in XLA_FLAGS wins.

The command line keeps compiled programs in jax's persistent compilation cache (`use_compilation_cache`): a run
whose programs were compiled before, by an earlier run with the same model, batch and schedule, loads them instead
(a 50-step mnist_cnn run, the whole process: 8.1-10.7 s without it, 5.5-6.8 s with it).
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

import jax
from jax.sharding import Mesh

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
CPU_OPTIONS = {YNN_FLAG: "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def _platform(mesh: Mesh | None) -> str:
    """The platform of `mesh`'s devices (default: jax.devices())."""
    return (jax.devices()[0] if mesh is None else mesh.devices.flat[0]).platform


def options(mesh: Mesh | None = None) -> dict[str, str]:
    """Compiler options for computations on `mesh`'s devices (default: jax.devices()): CPU_OPTIONS on CPU."""
    if _platform(mesh) != "cpu" or YNN_FLAG in os.environ.get("XLA_FLAGS", ""):
        return {}
    return dict(CPU_OPTIONS)


def once_options(mesh: Mesh | None = None) -> dict[str, int]:
    """Compiler options for programs that run once or rarely (the state's initialisation, the finiteness check before
    a save): on CPU, LLVM's optimisation level 1 instead of XLA's default. Initialisation then compiled 1.2-3x faster
    (mnist_cnn 0.8 instead of 2.3 s of every run's start-up) to bit-identical values, in every experiment
    (BUILD_NOTES.md, issue 8). Level 0 changes the last bits of random initial weights."""
    return {"xla_backend_optimization_level": 1} if _platform(mesh) == "cpu" else {}


def cache_root() -> Path:
    """jaxdl's cache directory: $XDG_CACHE_HOME/jaxdl, or ~/.cache/jaxdl."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxdl"


def cpu_description(cpuinfo: str | None = None) -> str:
    """The host CPU: its name, and on Linux its family/model and a digest of its instruction-set flags. The name
    alone is not enough: two Xeons of different generations both call themselves "Intel(R) Xeon(R) Processor",
    and a program XLA compiled for one (with avx512_fp16, say) must not be loaded on the other."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    first = {}
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():  # the first processor's entry
        name, _, value = line.partition(":")
        first[name.strip()] = value.strip()
    if "model name" not in first:
        return platform.processor() or platform.machine()
    flags = hashlib.sha1(" ".join(sorted(first.get("flags", "").split())).encode()).hexdigest()[:8]
    return f"{first['model name']} ({first.get('cpu family', '?')}/{first.get('model', '?')}, flags {flags})"


def machine_key(device_count: bool = True) -> str:
    """What a measurement or a compiled program depends on: device kind (and count, unless `device_count=False`),
    the CPU (`cpu_description`) and its cores, jax."""
    device = jax.devices()[0]
    devices = f"{device.platform}/{device.device_kind}" + (f" x{jax.local_device_count()}" if device_count else "")
    return f"{devices}/{cpu_description()} x{os.cpu_count()}/jax {jax.__version__}"


def use_compilation_cache(directory: str | Path | None = None) -> Path | None:
    """Keep compiled programs in `directory` (default: cache_root()/xla/<this machine>) for later runs to load.

    Call after `jax.distributed.initialize` (this looks at the devices). A cache directory the user already gave jax
    (JAX_COMPILATION_CACHE_DIR) is left as it is. One directory per machine: XLA:CPU programs are built for the CPU
    they were compiled on, and a home directory shared by different machines should not trade them back and forth.
    Returns the directory in use, or None when it cannot be created (then everything is compiled, as without it).
    """
    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    if directory is None:
        directory = cache_root() / "xla" / hashlib.sha1(machine_key().encode()).hexdigest()[:16]
    directory = Path(directory).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # jax's default threshold, 1 s, would keep only init and the train step; at 0.1 s the evaluation step and the
    # finiteness check before a save are kept too. Below that are eager one-op programs, not worth a file each.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_compilation_cache_max_size", 2**30)  # 1 GiB, least recently used entries go first
    return directory
