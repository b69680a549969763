"""Fine-tuning: start a run from another run's parameters (`init.from`), and fold LoRA adapters into plain weights.

Parameters are matched by tree path. Anything that does not match — a path on one side only, or a shape that
differs — is an error listing the paths, unless `init.skip` names it (it then keeps its fresh initialisation):
never a silent partial load.
"""

from __future__ import annotations

import collections
from typing import Any

import jax
from flax import traverse_util

from jaxdl import checkpoint, paths
from jaxdl.errors import UsageError

Variables = dict[str, Any]  # {"params": ..., "batch_stats": ..., ...}: what model.apply takes


def merge_pretrained(fresh: Variables, loaded: Variables, skip: tuple[str, ...]) -> tuple[Variables, list[tuple]]:
    """`fresh` with every leaf replaced by the same path's leaf of `loaded`, except those matching `skip`.

    A path matches `skip` by its full name ("params/Dense_1/kernel") or its name within its collection
    ("Dense_1/kernel"). Returns the variables and a report: (path, status, size) with status loaded / skipped / new.
    """
    fresh_flat = traverse_util.flatten_dict(fresh, sep="/")
    loaded_flat = traverse_util.flatten_dict(loaded, sep="/")
    skipped = lambda name: paths.matches(name, skip) or paths.matches(name.split("/", 1)[-1], skip)
    problems, report, merged = [], [], {}
    for name, value in fresh_flat.items():
        if skipped(name):
            merged[name] = value
            report.append((name, "skipped" if name in loaded_flat else "new", value.size))
        elif name not in loaded_flat:
            problems.append(f"{name} is not in the checkpoint")
        elif loaded_flat[name].shape != value.shape:
            problems.append(f"{name} has shape {loaded_flat[name].shape} in the checkpoint, {value.shape} here")
        else:
            merged[name] = loaded_flat[name].astype(value.dtype)
            report.append((name, "loaded", value.size))
    problems += [
        f"{name} is in the checkpoint but not in this model"
        for name in loaded_flat
        if name not in fresh_flat and not skipped(name)
    ]
    if problems:
        raise UsageError(
            f"init.from does not fit this model ({len(problems)} problems; add paths to --config.init.skip to keep "
            f"them freshly initialised): {'; '.join(problems)}"
        )
    return traverse_util.unflatten_dict(merged, sep="/"), report


def format_report(report: list[tuple]) -> str:
    """A short table: one row per module (path without its last part) and status, with parameter counts."""
    rows = collections.defaultdict(int)
    for name, status, size in report:
        rows[(name.rsplit("/", 1)[0], status)] += size
    lines = [f"  {module:48s} {status:8s} {size:>12,d}" for (module, status), size in rows.items()]
    return "\n".join(["init.from:", *lines])


def initialize_from(
    path: str, variables: Variables, skip: tuple[str, ...], sharding: jax.sharding.Sharding
) -> tuple[Variables, str]:
    """The model's variables with the checkpoint's values where the paths match; and the report table."""
    saved = checkpoint.read_variables(path, sharding)
    loaded = {"params": saved["params"], **saved["model_state"]}
    merged, report = merge_pretrained(variables, loaded, skip)
    return merged, format_report(report)


def parameter_counts(params: Any, trainable_mask: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    sizes = [x.size for x in jax.tree.leaves(params)]
    return int(sum(s for s, t in zip(sizes, jax.tree.leaves(trainable_mask), strict=True) if t)), int(sum(sizes))
