"""PNG plots of runs: learning curves from metrics.jsonl, and for classifiers a confusion matrix and the worst-
classified test images.

    python -m jaxdl.plot WORKDIR                      # WORKDIR/plots/curves.png
    python -m jaxdl.plot RUN_A RUN_B ... [--out=F]    # the runs' curves overlaid, in F (default comparison.png)

Training writes every plot into WORKDIR/plots/ at its end, and `--mode=eval` writes them again for the checkpoint
it evaluates. Figures are drawn on matplotlib's Agg canvas through `matplotlib.figure.Figure` — never pyplot — so
nothing needs a display and the process-wide backend of a notebook that imports jaxdl stays as it was.
Their pixel size is fixed: `figsize * DPI` (no tight bounding box), PANEL_INCHES per curve panel.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

from jaxdl import compiler, sharding
from jaxdl import data as data_lib
from jaxdl.errors import UsageError
from jaxdl.reporting import TIMING_FIELDS
from jaxdl.tasks.binary import BinaryClassification
from jaxdl.tasks.classification import Classification

DPI = 100
PANEL_INCHES = (4.0, 3.0)  # one curve panel
PANEL_COLUMNS = 3
CONFUSION_INCHES = (7.0, 6.0)
WORST_GRID = (4, 4)  # rows, columns of the worst-classified images
WORST_INCHES = (8.0, 9.0)
# Not learning curves: speed, bookkeeping, and the per-step gradient norm (noisy; TensorBoard has it).
NOT_PLOTTED = {"step", "split", "count", "grad_norm", "skipped_updates", *TIMING_FIELDS}
SPLIT_STYLE = {"train": {"linewidth": 1.0, "alpha": 0.7}, "eval": {"marker": "o", "markersize": 3}}


def read_metrics(workdir: str | Path) -> list[dict]:
    """The lines of WORKDIR/metrics.jsonl (UsageError when there is none)."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        raise UsageError(f"{path} not found: {workdir} is not a jaxdl run directory (or has not logged anything)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def series(records: list[dict], split: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric in one split, by step; a step logged twice (a resumed run) keeps its last."""
    by_step = {r["step"]: r[name] for r in records if r.get("split") == split and isinstance(r.get(name), float)}
    steps = np.array(sorted(by_step), dtype=np.int64)
    return steps, np.array([by_step[s] for s in steps], dtype=np.float64)


def panel_names(runs: Sequence[list[dict]]) -> list[str]:
    """loss first, then the evaluated metrics, then train-only ones, the learning rate last."""
    seen: dict[str, set[str]] = {}
    for records in runs:
        for r in records:
            for name, value in r.items():
                if name not in NOT_PLOTTED and isinstance(value, float):
                    seen.setdefault(name, set()).add(r.get("split"))
    order = lambda n: (n != "loss", n == "learning_rate", seen[n] == {"train"}, n)
    return sorted(seen, key=order)


def curves(workdirs: Sequence[str | Path], out: str | Path) -> Path:
    """Train (line), eval (dots) and test (cross) values of every metric, one panel each, one colour per run."""
    runs = [read_metrics(w) for w in workdirs]
    names = panel_names(runs)
    if not names:
        raise UsageError(f"no metrics to plot in {', '.join(str(w) for w in workdirs)}")
    labels = run_labels(workdirs)
    columns = min(PANEL_COLUMNS, len(names))
    rows = -(-len(names) // columns)
    figure = new_figure(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        for index, (records, label) in enumerate(zip(runs, labels, strict=True)):
            color = f"C{index % 10}"
            prefix = f"{label} " if len(runs) > 1 else ""
            for split, style in SPLIT_STYLE.items():
                steps, values = series(records, split, name)
                if len(steps):
                    ax.plot(steps, values, color=color, label=f"{prefix}{split}", **style)
            steps, values = series(records, "test", name)
            if len(steps):
                ax.plot(steps, values, "x", color=color, markersize=8, label=f"{prefix}test")
        plotted = [line.get_ydata() for line in ax.get_lines()]
        values = np.concatenate(plotted) if plotted else np.array([1.0])
        if name in ("loss", "learning_rate", "perplexity") and values.min() > 0 and values.max() / values.min() > 20:
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    return save(figure, out)


def run_labels(workdirs: Sequence[str | Path]) -> list[str]:
    """Each run's directory name, or its whole path when two runs share a name."""
    names = [Path(w).name for w in workdirs]
    return names if len(set(names)) == len(names) else [str(w) for w in workdirs]


def confusion_matrix(confusion: np.ndarray, out: str | Path, class_names: Sequence[str]) -> Path:
    """confusion[true, predicted] as a heat map, with the counts written in when there are few classes."""
    figure = new_figure(*CONFUSION_INCHES)
    ax = figure.subplots()
    image = ax.imshow(confusion, cmap="Blues")
    figure.colorbar(image, ax=ax)
    k = len(confusion)
    if k <= 20:
        ticks = np.arange(k)
        ax.set_xticks(ticks, class_names, rotation=90 if max(map(len, class_names)) > 3 else 0)
        ax.set_yticks(ticks, class_names)
        threshold = confusion.max() / 2
        for (i, j), count in np.ndenumerate(confusion):
            color = "white" if count > threshold else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=color)
    accuracy = np.trace(confusion) / max(confusion.sum(), 1)
    ax.set_title(f"confusion matrix: {confusion.sum():,} test examples, accuracy {accuracy:.2%}")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return save(figure, out)


def worst_images(
    images: np.ndarray, true: np.ndarray, probabilities: np.ndarray, out: str | Path, class_names: Sequence[str]
) -> Path:
    """The test images the model was most wrong about (lowest probability of the true class), with labels."""
    rows, columns = WORST_GRID
    worst = np.argsort(probabilities[np.arange(len(true)), true])[: rows * columns]
    figure = new_figure(*WORST_INCHES)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, worst, strict=False):
        predicted = int(np.argmax(probabilities[i]))
        image = images[i]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        ax.set_title(
            f"#{i} true {class_names[true[i]]}\npredicted {class_names[predicted]} ({probabilities[i, predicted]:.0%})",
            fontsize=8,
            color="red" if predicted != true[i] else "black",
        )
    figure.suptitle("worst-classified test images (lowest probability of the true class)")
    return save(figure, out)


def new_figure(width: float, height: float):
    """A matplotlib Figure of width x height inches at DPI (imported on first use: 0.5-1.5 s that the modes which
    draw nothing need not pay)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(figure, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=DPI)
    return out


def is_classifier(task) -> bool:
    """A task whose outputs are class scores: softmax over classes, or one sigmoid logit (two classes)."""
    return isinstance(task, (Classification, BinaryClassification))


def class_probabilities(task, outputs: np.ndarray) -> np.ndarray:
    """(N, classes) probabilities from a classifier's outputs; a binary classifier's are [P(0), P(1)].
    On the host with scipy: jax's eager softmax compiled five one-op programs at the end of every run. Imported
    here, not with the module: `import scipy.special` took 0.2-0.3 s of every command's start-up (BUILD_NOTES #8)."""
    import scipy.special

    outputs = np.asarray(outputs, np.float32)
    if isinstance(task, BinaryClassification):
        positive = scipy.special.expit(outputs.reshape(len(outputs)))
        return np.stack([1 - positive, positive], axis=-1)
    return scipy.special.softmax(outputs, axis=-1)


def predicted_classes(task, probabilities: np.ndarray) -> np.ndarray:
    """The class the task itself predicts (a binary task's decision threshold need not be 0.5)."""
    if isinstance(task, BinaryClassification):
        return (probabilities[:, 1] >= task.threshold).astype(np.int64)
    return probabilities.argmax(-1)


def is_image_classifier(run) -> tuple[bool, bool]:
    """(a classifier?, whose inputs are images: height x width x 1 or 3 channels?)."""
    if not is_classifier(run.experiment.task):
        return False, False
    shape = run.test_source.take(np.arange(1))["inputs"].shape[1:]
    return True, len(shape) == 3 and shape[-1] in (1, 3)


def class_names(run, count: int) -> list[str]:
    """The dataset's metadata["class_names"] when it has them, else the class indices."""
    names = run.experiment.data.metadata.get("class_names")
    return [str(n) for n in names] if names else [str(i) for i in range(count)]


def predict_outputs(run, state, source: data_lib.Source) -> np.ndarray:
    """The model's outputs for every example of `source`, in order. Every process must call it (it is sharded like
    the evaluation); every process gets all of them."""
    model = run.experiment.model

    def forward(state, batch):
        return model.apply(state.variables, batch["inputs"], train=False)

    forward = jax.jit(
        forward,
        in_shardings=(run.state_sharding, sharding.batch_sharding(run.mesh)),
        out_shardings=sharding.replicated(run.mesh),
        compiler_options=compiler.options(run.mesh),
    )
    batches = data_lib.eval_batches(
        run.experiment.data, source, run.config.data.eval_batch_size, jax.process_index(), jax.process_count()
    )
    outputs = [np.asarray(forward(state, sharding.global_batch(b, run.mesh))) for b in batches]
    return np.concatenate(outputs)[: len(source)]


def run_plots(run, state, workdir: str | Path) -> list[Path]:
    """Every plot of a run into WORKDIR/plots: curves, and for a classifier its confusion matrix and worst test
    images (one pass over the test split, which every process takes part in; process 0 draws)."""
    directory = Path(workdir) / "plots"
    classifier, images = is_image_classifier(run)
    probabilities = None
    if classifier:
        probabilities = class_probabilities(run.experiment.task, predict_outputs(run, state, run.test_source))
    if jax.process_index() != 0:
        return []
    written = []
    if (Path(workdir) / "metrics.jsonl").is_file():
        written.append(curves([workdir], directory / "curves.png"))
    if probabilities is not None:
        source = run.test_source
        true = source.take(np.arange(len(source)))["targets"].astype(np.int64)
        k = probabilities.shape[-1]
        predicted = predicted_classes(run.experiment.task, probabilities)
        confusion = np.bincount(true * k + predicted, minlength=k * k).reshape(k, k)
        names = class_names(run, k)
        written.append(confusion_matrix(confusion, directory / "confusion_matrix.png", names))
        if images:
            inputs = source.take(np.arange(len(source)))["inputs"]
            written.append(worst_images(inputs, true, probabilities, directory / "worst_test_images.png", names))
    return written


def run_plots_safely(run, state, workdir: str | Path, say: Callable[[str], None] | None = None) -> list[Path]:
    """`run_plots`, except that a failure is a warning: plots must never fail a finished run. `say` prints a line
    (default: to stderr)."""
    say = say or functools.partial(print, file=sys.stderr)
    try:
        written = run_plots(run, state, workdir)
    except Exception as e:  # any failure at all: the run's results are already saved
        say(f"warning: could not write the plots ({type(e).__name__}: {str(e).strip()[:300]}); the run is unaffected")
        return []
    if written:
        say(f"plots: {', '.join(str(p) for p in written)}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m jaxdl.plot WORKDIR [WORKDIR ...] [--out=FILE]`; exit 2 with one line on bad input."""
    parser = argparse.ArgumentParser(prog="python -m jaxdl.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+", help="run directories (each with a metrics.jsonl)")
    parser.add_argument(
        "--out", default=None, help="PNG to write; default WORKDIR/plots/curves.png, or comparison.png for several"
    )
    args = parser.parse_args(argv)
    out = args.out or (Path(args.workdirs[0]) / "plots" / "curves.png" if len(args.workdirs) == 1 else "comparison.png")
    try:
        print(curves(args.workdirs, out))
    except UsageError as e:
        print(f"jaxdl.plot: error: {e}", file=sys.stderr)
        return 2
    return 0
