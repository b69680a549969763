"""The XLA compiler options jaxdl compiles its model steps with (`jax.jit(..., compiler_options=...)`).

On CPU, jaxlib 0.10.2 hands convolutions to YNNPACK ("YNN fusions") by default. On this project's 2-core AMD EPYC,
XLA's own (Eigen) convolutions ran every convolutional train step faster: mnist_cnn 12-16%, the autoencoder, the
GAN and the 32/64-channel split pre-training model 23-26% (interleaved in one process, BUILD_NOTES.md issue 8).
Reductions and dots stay with YNNPACK, the default for them, so a model without convolutions compiles to exactly
the program it compiled to before. A user's own `--xla_cpu_experimental_ynn_fusion_type` in XLA_FLAGS wins.
"""

from __future__ import annotations

import os

import jax
from jax.sharding import Mesh

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
CPU_OPTIONS = {YNN_FLAG: "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def options(mesh: Mesh | None = None) -> dict[str, str]:
    """Compiler options for computations on `mesh`'s devices (default: jax.devices()): CPU_OPTIONS on CPU."""
    device = jax.devices()[0] if mesh is None else mesh.devices.flat[0]
    if device.platform != "cpu" or YNN_FLAG in os.environ.get("XLA_FLAGS", ""):
        return {}
    return dict(CPU_OPTIONS)
