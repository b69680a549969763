"""Compile the train step of a few configs on this process's (fake) devices and print, as JSON, whether each ran
per device (jaxdl.sharding.per_device_step), the shapes its all-reduces sum and how many instructions read the
summed array of all gradients, as XLA compiled them."""

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's jaxdl, whatever is installed

import jax
import numpy as np

from jaxdl import data as data_lib
from jaxdl import sharding, training

from conftest import tiny_run_config


def all_reduces(hlo: str) -> list[list[list[int]]]:
    """Per all-reduce of the compiled program, the shapes of the arrays it sums."""
    found = []
    for line in hlo.splitlines():
        if re.search(r"\sall-reduce(-start)?\(", line):
            result_type = line.split("=", 1)[1].split("all-reduce", 1)[0]
            found.append([[int(d) for d in dims.split(",") if d] for dims in re.findall(r"\[([\d,]*)\]", result_type)])
    return found


def readers_of_flat_sum(hlo: str, size: int) -> int:
    """How many instructions of the compiled program read the all-reduced f32[size] array (all gradients, flat)."""
    lines = hlo.splitlines()
    # Per instruction: its name, result type, opcode and first operand.
    defined = [re.match(r"\s*(?:ROOT )?(%[\w.-]+) = (.+?) ([\w-]+)\((%[\w.-]+)?", line) for line in lines]
    reduces = {d[1] for d in defined if d and d[3] == "all-reduce"}
    sums = {
        d[1] for d in defined if d and d[2].startswith(f"f32[{size}]") and (d[3] == "all-reduce" or d[4] in reduces)
    }
    return sum(1 for line in lines if any(re.search(re.escape(name) + r"[,)]", line) for name in sums))


def variant(name: str):
    experiment, _, change = name.partition(":")
    config = tiny_run_config(experiment)
    if change == "fsdp":
        config.mesh.update(data=1, fsdp=-1, fsdp_min_size=64)
    elif change == "grad_norm":
        config.train.grad_norm = True
    elif change == "batch_norm":
        config.model.batch_norm = True
    return config


results = {}
for name in sys.argv[1:]:
    run = training.setup(variant(name))
    batches = data_lib.train_batches(run.experiment.data, run.train_source, run.config.data.batch_size, 0, 0, 1, 0)
    hlo = training.compile_train_step(run, next(batches), jax.random.key(0)).as_text()
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(run.state_shapes.params))
    results[name] = {
        "per_device": sharding.per_device_step_applies(run.mesh, run.state_shapes, run.tx, run.config.train.grad_norm),
        "all_reduces": all_reduces(hlo),
        "parameters": params,
        "flat_sum_readers": readers_of_flat_sum(hlo, params),
    }
print("RESULTS " + json.dumps(results))
