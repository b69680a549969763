"""Using a trained run: `jaxdl.load(workdir)` (a callable model with its variables), evaluate a checkpoint
(`--mode=eval`), classify files (`--mode=predict`), explain a classification (`--mode=explain`), sample from a
language model (`--mode=sample`), merge LoRA adapters into plain weights (`--mode=merge_lora`)."""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdl import config as config_lib
from jaxdl import explain, inputs, plot, sampling
from jaxdl.checkpoint import Checkpoints, read_metadata
from jaxdl.data.text import Vocabulary
from jaxdl.errors import UsageError
from jaxdl.reporting import append_metrics, format_metrics
from jaxdl.state import TrainState
from jaxdl.tasks.classification import Classification
from jaxdl.training import Setup, compile_eval_step, evaluate, initial_state, setup, write_config


def restore(
    config: ml_collections.ConfigDict, workdir: str | Path, step: int | None = None
) -> tuple[Setup, TrainState, dict]:
    """(set-up, state, dataset metadata) of checkpoint `step` (default: the newest) in `workdir`. The state is the one
    evaluated (`TrainState.evaluated`): its parameters are their moving average when the run kept one."""
    directory = Path(workdir) / "checkpoints"
    if not directory.is_dir():  # checked first: opening a CheckpointManager would create the directory
        raise UsageError(f"no checkpoints in {workdir}: train first (--mode=train) or point --workdir at a run")
    run = setup(config)
    checkpoints = Checkpoints(directory, keep=config.checkpoint.keep)
    step = checkpoints.latest_step() if step is None else step
    if step is None or step not in checkpoints.manager.all_steps():
        available = checkpoints.manager.all_steps()
        raise UsageError(f"no checkpoint {'' if step is None else step} in {directory} (it has {list(available)})")
    state, _ = checkpoints.restore(run.abstract_state(), step)
    checkpoints.close()
    return run, state.evaluated(), read_metadata(directory / str(step))


def sample(config: ml_collections.ConfigDict, workdir: str | Path) -> str:
    """Generate `config.sample.length` characters after `config.sample.prompt` from the run in `workdir`."""
    run, state, metadata = restore(config, workdir)
    if "vocabulary" not in metadata:
        raise UsageError(f"the run in {workdir} is not a language model (its checkpoint has no vocabulary)")
    vocabulary = Vocabulary(metadata["vocabulary"])  # the one the model was trained with, not the current text's
    options = config.sample
    if not options.prompt:
        raise UsageError("--config.sample.prompt is empty: give at least one character to start from")
    prompt = jnp.asarray(vocabulary.encode(options.prompt))[None, :]
    rng = jax.random.key(config.seed)
    generate = lambda: sampling.generate_windowed(
        run.experiment.model, state.params, prompt, options.length, rng, options.temperature, options.top_k
    )
    jax.block_until_ready(generate())  # compile first, so the rate below is generation alone
    start = time.perf_counter()
    tokens = np.asarray(jax.block_until_ready(generate()))[0]
    seconds = time.perf_counter() - start
    text = vocabulary.decode(tokens[prompt.shape[1] :])
    print(options.prompt + text)
    print(f"[{options.length} characters in {seconds:.2f} s: {options.length / seconds:.0f} tokens/s]", flush=True)
    return text


def merge_lora(config: ml_collections.ConfigDict, workdir: str | Path) -> Path:
    """Write WORKDIR/merged: a run of the un-adapted model whose checkpoint holds the LoRA-merged weights."""
    if not config.lora.rank:
        raise UsageError("--mode=merge_lora needs the LoRA run's config: --config.lora.rank > 0 as it was trained")
    run, state, metadata = restore(config, workdir)
    plain = config.copy_and_resolve_references()
    plain.lora.rank = 0
    plain.init["from"], plain.init.skip = "", ()
    plain_run = setup(plain)
    fresh = initial_state(plain_run, jax.random.key(0))
    merged_params = jax.jit(run.experiment.model.merge, out_shardings=plain_run.state_sharding.params)(state.params)
    merged = fresh.replace(step=state.step, params=merged_params, model_state=state.model_state)
    if merged.ema_params is not None:  # the merged weights are the average already (`restore`)
        merged = merged.replace(ema_params=merged_params)
    target = Path(workdir) / "merged"
    target.mkdir(parents=True, exist_ok=True)
    write_config(plain, target)
    store = Checkpoints(target / "checkpoints", keep=1)
    store.save(merged, {}, metadata)
    store.close()
    print(f"merged LoRA adapters into {target} (step {int(np.asarray(state.step))})")
    return target


@dataclasses.dataclass(frozen=True)
class Model:
    """A trained model from a run's checkpoint, ready to call (what `jaxdl.load` returns).

    `model(inputs)` runs the Flax module on inputs as it sees them (preprocessed) and returns its outputs (logits
    for a classifier); `model.predict(examples)` takes raw examples as the dataset stores them (e.g. uint8 pixels),
    preprocesses them like training did and returns class probabilities for a classifier, outputs otherwise.
    """

    config: ml_collections.ConfigDict  # the run's config.json
    module: Any  # the flax module (or jaxdl.lora.LoRA wrapper) of the experiment
    task: Any
    variables: dict  # {"params": ..., plus e.g. "batch_stats"}: what module.apply takes
    step: int  # the checkpoint's step
    setup: Setup  # everything the run derives from its config: data sources, mesh, ...

    @property
    def params(self) -> Any:
        return self.variables["params"]

    @functools.cached_property
    def _apply(self):
        # No jaxdl.compiler options: they are refused on a jit nested in another transform, as in explain's gradients.
        return jax.jit(lambda variables, x: self.module.apply(variables, x, train=False))

    def __call__(self, inputs: Any) -> np.ndarray:
        """The module's outputs for a batch of preprocessed inputs, in evaluation mode (no dropout, running stats)."""
        return np.asarray(self._apply(self.variables, jnp.asarray(inputs)))

    def preprocess(self, examples: np.ndarray) -> np.ndarray:
        """Raw examples (a batch) to model inputs, with the dataset's own `preprocess`, as in training."""
        targets = np.zeros(len(examples), np.int32)  # some preprocessors read the targets; these are unused
        return self.setup.experiment.data.preprocess({"inputs": np.asarray(examples), "targets": targets})["inputs"]

    @property
    def is_classifier(self) -> bool:
        return plot.is_classifier(self.task)

    def predict(self, examples: np.ndarray) -> np.ndarray:
        """Class probabilities (batch, classes) for a classifier (a binary one: [P(0), P(1)]), the module's outputs
        otherwise."""
        outputs = self(self.preprocess(examples))
        return plot.class_probabilities(self.task, outputs) if self.is_classifier else outputs

    def top_k(self, examples: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """(classes, probabilities), each (batch, k), most probable first."""
        probabilities = self.predict(examples)
        classes = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
        return classes, np.take_along_axis(probabilities, classes, axis=-1)

    def class_names(self) -> list[str]:
        """The dataset's metadata["class_names"], else "0", "1", ..."""
        count = 2 if not isinstance(self.task, Classification) else self.task.num_classes
        return plot.class_names(self.setup, count)

    def example(self) -> np.ndarray:
        """One raw training example with its batch axis: the shape and dtype `predict` takes."""
        return self.setup.train_source.take(np.arange(1))["inputs"]

    def saliency(self, examples: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
        """|d logit[target] / d input| for raw examples, the inputs' shape; target defaults to the predicted class."""
        x = self.preprocess(examples)
        target = self(x).argmax(-1) if target is None else np.asarray(target)
        return explain.saliency(functools.partial(self._apply, self.variables), x, jnp.asarray(target))

    def class_activation_maps(self, examples: np.ndarray, target: np.ndarray | None = None) -> dict | None:
        """{"Grad-CAM": maps, "HiResCAM": maps}, each (batch, height, width) in [0, 1], of the last nn.Conv layer;
        None when the model has none. Target defaults to the predicted class."""
        x = self.preprocess(examples)
        target = self(x).argmax(-1) if target is None else np.asarray(target)
        apply = lambda x: self.module.apply(self.variables, x, train=False)
        return explain.class_activation_maps(apply, x, jnp.asarray(target))


def load(workdir: str | Path, step: int | None = None, config: ml_collections.ConfigDict | None = None) -> Model:
    """The model of the run in `workdir` at checkpoint `step` (default: the newest), built from the run's own
    config.json (or `config`). Single-process: the parameters are gathered onto this process's devices."""
    config = config_lib.load_config(workdir) if config is None else config
    run, state, _ = restore(config, workdir, step)
    return Model(config, run.experiment.model, run.experiment.task, state.variables, int(state.step), run)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str | Path, step: int | None = None) -> dict:
    """`--mode=eval`: the test metrics of checkpoint `step` (default: the newest), printed, appended to
    metrics.jsonl as a "test" line, and the run's plots redrawn for that checkpoint."""
    run, state, _ = restore(config, workdir, step)
    step = int(jax.device_get(state.step))
    metrics = evaluate(run, compile_eval_step(run), state, run.test_source)
    append_metrics(workdir, step, "test", metrics)
    if jax.process_index() == 0:
        print(f"{config.experiment} checkpoint {step} test: {format_metrics(metrics)}", flush=True)
    plot.run_plots_safely(run, state, workdir)
    return metrics


def _classifier(model: Model, workdir: str | Path, mode: str) -> None:
    # explain differentiates one logit per class: multiclass (softmax) classifiers only
    if not (model.is_classifier if mode == "predict" else isinstance(model.task, Classification)):
        hint = "; use --mode=sample" if "vocabulary" in model.setup.experiment.data.metadata else ""
        raise UsageError(
            f"--mode={mode} is for classifiers; the run in {workdir} has a {type(model.task).__name__} task{hint}"
        )


def predict_file(config: ml_collections.ConfigDict, workdir: str | Path, path: str, k: int = 3, step=None) -> list:
    """`--mode=predict --input=FILE`: the top-`k` classes and probabilities of each example in an image or .npy
    file, printed one line per example; returns [(class names, probabilities)] per example."""
    if not path:
        raise UsageError("--mode=predict needs --input=FILE (a PNG/JPEG image or a .npy array of examples)")
    if not Path(path).is_file():
        raise UsageError(f"--input={path}: no such file; give a PNG/JPEG image or a .npy array of examples")
    model = load(workdir, step, config)
    _classifier(model, workdir, "predict")
    examples = inputs.read_examples(path, model.example())
    classes, probabilities = model.top_k(examples, k)
    names = model.class_names()
    results = []
    for i, (row, p) in enumerate(zip(classes, probabilities, strict=True)):
        labels = [names[c] for c in row]
        results.append((labels, p.tolist()))
        where = path if len(examples) == 1 else f"{path}[{i}]"
        print(f"{where}: " + ", ".join(f"{n} ({q:.2%})" for n, q in zip(labels, p, strict=True)), flush=True)
    return results


def explain_file(config: ml_collections.ConfigDict, workdir: str | Path, path: str, step=None) -> list[Path]:
    """`--mode=explain --input=FILE`: saliency and Grad-CAM overlays of each example's predicted class, written to
    WORKDIR/explain/<file name>[_<index>].png (at most 16 examples)."""
    if not path or not Path(path).is_file():
        raise UsageError(f"--input={path or '(none)'}: no such file; give a PNG/JPEG image or a .npy array")
    model = load(workdir, step, config)
    _classifier(model, workdir, "explain")
    examples = inputs.read_examples(path, model.example())[:16]
    if examples.ndim != 4:
        raise UsageError(
            f"--mode=explain draws images; the run in {workdir} takes inputs of shape {examples.shape[1:]}"
        )
    probabilities = model.predict(examples)
    predicted = probabilities.argmax(-1)
    saliency_maps, cams = model.saliency(examples, predicted), model.class_activation_maps(examples, predicted)
    names, stem, written = model.class_names(), Path(path).stem, []
    for i, image in enumerate(examples):
        out = Path(workdir) / "explain" / (f"{stem}.png" if len(examples) == 1 else f"{stem}_{i}.png")
        title = f"{Path(path).name}{'' if len(examples) == 1 else f'[{i}]'}: predicted {names[predicted[i]]}"
        title += f" ({probabilities[i, predicted[i]]:.1%}), checkpoint {model.step}"
        maps = None if cams is None else {name: cam[i] for name, cam in cams.items()}
        written.append(explain.overlay(image, saliency_maps[i], maps, title, out))
        print(f"{out}: predicted {names[predicted[i]]} ({probabilities[i, predicted[i]]:.2%})", file=sys.stdout)
    return written
