"""Run short trainings on several meshes in one process (the test sets the fake device count) and print, as JSON,
each run's per-step losses and how many state arrays the sharding rule split over the fsdp axis."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's jaxdl, whatever is installed

import jax

import jaxdl
from jaxdl import training

from conftest import tiny_run_config

experiment, workdir_root, meshes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
results = {}
for name, (data, fsdp) in meshes.items():
    config = tiny_run_config(experiment)
    config.mesh.update(data=data, fsdp=fsdp, fsdp_min_size=64)
    run = training.setup(config)
    sharded = sum("fsdp" in str(s.spec) for s in jax.tree.leaves(run.state_sharding))
    jaxdl.train(config, f"{workdir_root}/{name}")
    results[name] = {"sharded_arrays": sharded, "devices": jax.device_count()}
print("RESULTS " + json.dumps(results))
