"""The model summary printed when a run starts: layers, their output shapes, parameter counts and sizes.

flax's `nn.tabulate` does the work. It runs the model under `jax.eval_shape` (an abstract trace: no compilation,
no arrays), which costs 0.03 s for mnist_cnn and 0.1 s for shakespeare_gpt, against seconds for the compilation of
the train step, so the summary needs no hook into the loop's own trace. A model `nn.tabulate` cannot trace (one
whose call takes other arguments than `(inputs, train=False)`) gets a table of its parameters instead, read from the
state shapes the run already has.
"""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import numpy as np

from jaxdl import paths
from jaxdl.lora import LoRA


def model_summary(run, workdir: Path | None = None, depth: int = 1) -> str:
    """A plain-text table of `run.experiment.model` (a `jaxdl.training.Setup`), also written to
    WORKDIR/model_summary.txt. `depth` is how many levels of submodules get a row of their own."""
    model = run.experiment.model
    model = model.base if isinstance(model, LoRA) else model  # the adapters are counted in the totals below
    example = run.experiment.data.preprocess(run.train_source.take(np.arange(1)))
    try:
        table = nn.tabulate(
            model,
            jax.random.key(0),
            depth=depth,
            console_kwargs={"force_terminal": False, "width": 120},
        )(example["inputs"], train=False)
    except Exception as e:  # the summary is a courtesy: a model it cannot trace still trains
        table = f"(nn.tabulate could not trace the model: {type(e).__name__}; its parameters instead)\n"
        table += parameter_table(run.state_shapes.params)
    table = table.strip("\n") + "\n" + totals_line(run.state_shapes)
    if workdir is not None and jax.process_index() == 0:
        (Path(workdir) / "model_summary.txt").write_text(table + "\n")
    return table


def totals_line(state_shapes) -> str:
    """Parameter count and size, and the size of the whole train state (optimizer moments included)."""
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state_shapes.params))
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state_shapes.params))
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state_shapes))
    return f"{count:,} parameters, {megabytes(param_bytes)}; train state with optimizer {megabytes(state_bytes)}"


def megabytes(size: int) -> str:
    """Bytes in MB (2**20), with enough decimals to show a small model's size too."""
    return f"{size / 2**20:.2f} MB" if size >= 2**20 else f"{size / 2**20:.4f} MB"


def parameter_table(params) -> str:
    """One line per parameter array: path, shape, count."""
    rows = [
        (paths.path_name(p), str(tuple(x.shape)), f"{int(np.prod(x.shape)):,}")
        for p, x in jax.tree_util.tree_leaves_with_path(params)
    ]
    header = ("parameter", "shape", "count")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    line = lambda row: f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}"
    return "\n".join(line(row) for row in [header, *rows])
