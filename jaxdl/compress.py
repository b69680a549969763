"""Post-training compression of a trained run (`--mode=compress`): int8 weights and magnitude pruning.

"Weights" are the parameters with two or more dimensions (dense and conv kernels, embeddings); biases and
normalisation scales stay float32, as do model state such as batch-norm statistics.
- int8: symmetric, per output channel (the last axis): scale = max|w| / 127 over the channel, q = round(w / scale)
  in [-127, 127]; dequantised w' = q * scale is within scale / 2 of w.
- pruning: the `compress.sparsity` fraction of weights with the smallest magnitude set to zero, either by one
  threshold over all weights (`compress.scope="global"`, the default: layers with many small weights lose more) or
  per weight array (`"per_layer"`).
Sizes are those of a storage format, computed from the arrays: float32 = 4 bytes per value; int8 = 1 byte per
weight plus a float32 scale per channel; pruned = the nonzero values plus a 1-bit mask per weight.
The evaluation runs the float model on dequantised weights: it measures the accuracy the format keeps, not int8
arithmetic speed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from jaxdl.errors import UsageError
from jaxdl.training import compile_eval_step, evaluate


def is_weight(array: Any) -> bool:
    return np.ndim(array) >= 2


def quantize(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, float32 scale per output channel) of `weight`, symmetric per last-axis channel."""
    weight = np.asarray(weight, np.float32)
    max_abs = np.abs(weight).reshape(-1, weight.shape[-1]).max(axis=0)
    scale = np.where(max_abs > 0, max_abs / 127.0, 1.0).astype(np.float32)  # an all-zero channel stays zero
    return np.clip(np.round(weight / scale), -127, 127).astype(np.int8), scale


def dequantize(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return values.astype(np.float32) * scale


def prune(params: Any, sparsity: float, scope: str = "global") -> Any:
    """`params` with the `sparsity` fraction of smallest-magnitude weights zeroed (globally or per array)."""
    if scope not in ("global", "per_layer"):
        raise UsageError(f"--config.compress.scope={scope}: use global or per_layer")
    weights = [np.abs(np.asarray(w)).ravel() for w in jax.tree.leaves(params) if is_weight(w)]

    def threshold(magnitudes: np.ndarray) -> float:
        count = int(sparsity * magnitudes.size)  # this many zeroed: the ones below the count-th smallest magnitude
        return -np.inf if count == 0 else float(np.partition(magnitudes, count - 1)[count - 1])

    overall = threshold(np.concatenate(weights)) if weights and scope == "global" else None

    def prune_one(w):
        if not is_weight(w):
            return w
        w = np.asarray(w)
        cut = overall if overall is not None else threshold(np.abs(w).ravel())
        return np.where(np.abs(w) <= cut, 0, w).astype(w.dtype)

    return jax.tree.map(prune_one, params)


def quantize_tree(params: Any) -> Any:
    """Each weight as {"int8": values, "scale": per-channel scales}; the other parameters as they are (float32)."""
    return jax.tree.map(
        lambda w: dict(zip(("int8", "scale"), quantize(w), strict=True)) if is_weight(w) else np.asarray(w), params
    )


def dequantize_tree(quantized: Any) -> Any:
    """The float32 parameters that `quantize_tree`'s output stands for."""
    is_pair = lambda node: isinstance(node, dict) and set(node) == {"int8", "scale"}
    return jax.tree.map(
        lambda node: dequantize(node["int8"], node["scale"]) if is_pair(node) else node, quantized, is_leaf=is_pair
    )


def storage_bytes(params: Any, int8: bool, sparse: bool) -> int:
    """Bytes of `params` in the format above: weights dense or sparse (values + 1-bit mask), float32 or int8
    with a float32 scale per output channel; the other parameters dense float32."""
    total = 0
    for w in jax.tree.leaves(params):
        w = np.asarray(w)
        if not is_weight(w):
            total += w.size * 4
            continue
        stored = np.count_nonzero(w) if sparse else w.size
        total += stored * (1 if int8 else 4) + (int(np.ceil(w.size / 8)) if sparse else 0)
        total += w.shape[-1] * 4 if int8 else 0
    return int(total)


def sparsity_of(params: Any) -> float:
    weights = [np.asarray(w) for w in jax.tree.leaves(params) if is_weight(w)]
    return 1.0 - sum(np.count_nonzero(w) for w in weights) / max(sum(w.size for w in weights), 1)


def compress(config: ml_collections.ConfigDict, workdir: str | Path, step: int | None = None) -> dict:
    """Compress checkpoint `step` (default: the newest) of the run in `workdir`: report size and test metrics of
    the original, int8, pruned and pruned+int8 parameters (printed as a table, written to
    WORKDIR/compressed/report.json) and write the int8 and pruned+int8 parameters to WORKDIR/compressed/ (orbax).
    Returns the report: {"step", "sparsity", "scope", "variants": {name: {"bytes", "ratio", "sparsity", metrics}}}.
    """
    from jaxdl import inference  # imports jaxdl.training's users; kept out of module import time

    options = config.get("compress", ml_collections.ConfigDict({"sparsity": 0.5, "scope": "global"}))
    sparsity, scope = float(options.get("sparsity", 0.5)), options.get("scope", "global")
    if not 0 <= sparsity < 1:
        raise UsageError(f"--config.compress.sparsity={sparsity}: must be in [0, 1), e.g. 0.5")
    run, state, _ = inference.restore(config, workdir, step)
    step = int(jax.device_get(state.step))
    original = jax.tree.map(np.asarray, jax.device_get(state.params))
    int8 = quantize_tree(original)
    pruned = prune(original, sparsity, scope)
    pruned_int8 = quantize_tree(pruned)
    variants = {
        "original": (original, False, False),
        "int8": (dequantize_tree(int8), True, False),
        "pruned": (pruned, False, True),
        "pruned+int8": (dequantize_tree(pruned_int8), True, True),
    }
    eval_step = compile_eval_step(run)
    base_bytes = storage_bytes(original, int8=False, sparse=False)
    report = {"step": step, "sparsity": sparsity, "scope": scope, "variants": {}}
    for name, (params, as_int8, sparse) in variants.items():
        params_on_device = jax.tree.map(lambda new, old: jax.device_put(new, old.sharding), params, state.params)
        metrics = evaluate(run, eval_step, state.replace(params=params_on_device), run.test_source)
        size = storage_bytes(params, int8=as_int8, sparse=sparse)
        report["variants"][name] = {
            "bytes": size,
            "ratio": base_bytes / size,
            "sparsity": float(sparsity_of(params)),
            **metrics,
        }
    target = Path(workdir).absolute() / "compressed"
    save(target, step, {"int8": int8, "pruned+int8": pruned_int8}, jax.device_get(state.model_state))
    if jax.process_index() == 0:
        (target / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(format_table(report))
        print(f"compressed parameters and report.json in {target}", flush=True)
    return report


def save(directory: Path, step: int, variants: dict[str, Any], model_state: Any) -> None:
    """WORKDIR/compressed/{int8,pruned_int8}: orbax trees of {"params": quantized params, "model_state": ...},
    overwritten on every run (read back with `load`)."""
    for name, quantized in variants.items():
        tree = {"step": np.asarray(step), "params": quantized, "model_state": model_state}
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(directory / name.replace("+", "_"), tree, force=True)
        checkpointer.wait_until_finished()
        checkpointer.close()


def load(path: str | Path) -> dict:
    """{"params": float32 parameters, "model_state": ...} from WORKDIR/compressed/int8 or .../pruned_int8."""
    checkpointer = ocp.StandardCheckpointer()
    tree = checkpointer.restore(Path(path).absolute())
    checkpointer.close()
    return {"params": dequantize_tree(tree["params"]), "model_state": tree["model_state"]}


def format_table(report: dict) -> str:
    """The report as aligned text: one row per variant."""
    metric_names = [
        k
        for k, v in report["variants"]["original"].items()
        if k not in ("bytes", "ratio", "sparsity", "count") and isinstance(v, float)
    ]
    header = ["variant", "bytes", "x smaller", "sparsity", *metric_names]
    rows = [
        [name, f"{v['bytes']:,}", f"{v['ratio']:.2f}", f"{v['sparsity']:.3f}", *(f"{v[m]:.4f}" for m in metric_names)]
        for name, v in report["variants"].items()
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True))
    title = (
        f"compression of checkpoint {report['step']}: int8 per output channel; pruning {report['sparsity']:.0%} "
        f"of weights by magnitude ({report['scope']})"
    )
    return "\n".join([title, line(header), *map(line, rows)])
