"""Restore a run's last checkpoint onto this process's devices with the given mesh; save its parameters (npz)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's jaxdl, whatever is installed

import jax
import numpy as np

from jaxdl import config as config_lib
from jaxdl import inference, paths

workdir, data, fsdp, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
config = config_lib.load_config(workdir)
config.mesh.update(data=data, fsdp=fsdp, fsdp_min_size=64)
run, state, _ = inference.restore(config, workdir)
sharded = sum("fsdp" in str(leaf.sharding.spec) for leaf in jax.tree.leaves(state.params))
print(f"DEVICES {jax.device_count()} SHARDED {sharded}")
np.savez(out, **dict(zip(paths.names(state.params), jax.device_get(jax.tree.leaves(state.params)), strict=True)))
