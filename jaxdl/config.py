"""Experiments: where they are found, the fields every config has, and the checks that run before training.

An experiment is a Python module (a file in `experiments/`, or any `.py` path) with two functions:

    get_config() -> ml_collections.ConfigDict      # the numbers; start from `default_config()`
    build(config) -> jaxdl.Experiment              # the pieces: model, task, data

The config is plain data (it is written to `workdir/config.json` and overridable with `--config.a.b=v`); the
pieces are plain Python objects, so a user's own model class works by returning it from `build`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import json
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections

import experiments as _registry
from jaxdl.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Experiment:
    """The named pieces one run is made of; the training loop knows nothing else about an experiment."""

    model: Any  # a flax.linen.Module: pure init/apply
    task: Any  # loss, metrics and the train/eval steps (jaxdl.tasks)
    data: Any  # a jaxdl.data.Dataset: random-access train/validation/test sources


def default_config() -> ml_collections.ConfigDict:
    """The fields every experiment has; users and scripts rely on these names."""
    return ml_collections.ConfigDict(
        {
            "experiment": "",  # filled in by get_config(): the name or path the pieces come from
            "seed": 0,
            "dtype": "float32",  # compute dtype: float32 or bfloat16 (parameters stay float32)
            # "bfloat16": dense layers multiply bfloat16 operands into float32, the rest stays in dtype
            # (jaxdl.models.precision; models with a matmul_dtype field, e.g. GPT). "" = dtype.
            "matmul_dtype": "",
            "data": {
                "batch_size": 128,  # global batch, split over all devices and processes
                "eval_batch_size": 500,
                "validation_size": 0,  # examples held out of train for "eval"; 0 = evaluate on the test split
                "train_examples": 0,  # use only the first N training examples (quick runs); 0 = all
                "test_examples": 0,  # likewise for the test split; 0 = all
                # Training batches a background thread prepares ahead; -1 = 0 on CPU, where that thread would take
                # cores from XLA's compute (7-10% of mnist_cnn's throughput, BUILD_NOTES.md), else 4.
                "prefetch": -1,
            },
            "train": {
                "num_epochs": 1,
                "max_steps": 0,  # stop after this many steps; 0 = run num_epochs
                "log_every_steps": 50,
                "eval_every_steps": 0,  # 0 = once per epoch
                "skip_nonfinite": False,  # skip (and count) updates whose gradients hold NaN/Inf instead of stopping
                # Report the gradients' global norm (grad_norm) in the train lines. Off by default: one more pass
                # over the gradients each step, 4-5% of mnist_cnn's step on a 2-core CPU (BUILD_NOTES.md, #8).
                "grad_norm": False,
                "peak_flops": 0.0,  # FLOP/s per device (per process on CPU) for MFU; 0 = a timed matmul (jaxdl.flops)
                # Early stopping on a validation metric ("" = off; needs data.validation_size or a validation split).
                # The best checkpoint is kept in WORKDIR/best and the final test evaluates it (jaxdl.early_stopping).
                "early_stopping_metric": "",  # e.g. "accuracy" or "loss": a metric of the task's evaluation
                "early_stopping_mode": "auto",  # max, min, or auto: min for metrics named *loss*/*perplexity*
                "patience": 5,  # stop after this many evaluations without an improvement of more than min_delta
                "min_delta": 0.0,
            },
            "optim": {
                "name": "adam",  # sgd, momentum, nesterov, adam, adamw, rmsprop
                "learning_rate": 1e-3,
                "schedule": "constant",  # constant, cosine, warmup_cosine, onecycle
                "min_learning_rate": 0.0,  # where cosine and warmup_cosine end
                "b1": 0.9,  # Adam/AdamW first-moment decay (DCGAN uses 0.5)
                "b2": 0.999,  # Adam/AdamW second-moment decay
                "warmup_steps": 0,  # for warmup_cosine
                "onecycle_pct_start": 0.3,  # onecycle: the fraction of steps rising to learning_rate
                "onecycle_final_div": 1e4,  # onecycle: the final rate is learning_rate / 25 / this
                "step_every_steps": 1000,  # step schedule: multiply the rate by step_factor every this many steps
                "step_factor": 0.1,
                "weight_decay": 0.0,
                "no_decay": ("*bias", "*scale", "*embed*"),  # path globs exempt from weight decay (jaxdl.paths)
                "momentum": 0.9,
                "grad_clip_norm": 0.0,  # 0 = no clipping
                "trainable": (),  # path globs of the parameters that train; () = all. The rest stay frozen.
                "head": (),  # path globs of the "head": full learning rate; the rest gets backbone_lr_scale times it
                "backbone_lr_scale": 1.0,
                "l1": 0.0,  # L1 penalty l1 * sum(|w|) on the parameters not matching no_decay; 0 = off
                # > 0: keep a moving average of the parameters (e.g. 0.99, about the last 100 steps); evaluation,
                # inference and fine-tuning from the run use it. 0 = off.
                "ema_decay": 0.0,
            },
            # Fine-tuning: start from the parameters (and e.g. batch-norm statistics) of another run's checkpoint.
            "init": {
                "from": "",  # a workdir (its newest checkpoint) or a checkpoint step directory
                "skip": (),  # path globs kept at their fresh initialisation, e.g. a new head ("Dense_1/*",)
            },
            # LoRA: rank > 0 adapts the 2-D kernels matching `targets`; the adapters train, plus optim.trainable.
            "lora": {"rank": 0, "alpha": 16.0, "targets": ("*kernel",)},
            "checkpoint": {"every_steps": 0, "keep": 3},  # every_steps 0 = once per epoch
            # --mode=compress (jaxdl.compress): int8 weights and magnitude pruning of a trained run's parameters.
            "compress": {"sparsity": 0.5, "scope": "global"},  # pruned fraction of >=2-D weights; global/per_layer
            # Devices on each mesh axis (one may be -1: all the others leave). fsdp > 1 shards every state array of
            # at least fsdp_min_size elements over the fsdp axis; smaller ones are replicated.
            # cpu_devices > 0 splits a CPU host into that many devices for the mesh (jaxdl.sharding.use_cpu_devices);
            # 0 = jax's default, one CPU device. No effect on GPU/TPU.
            "mesh": {"data": -1, "fsdp": 1, "fsdp_min_size": 2**14, "cpu_devices": 0},
        }
    )


def list_experiments() -> list[tuple[str, str]]:
    """(name, first docstring line) for every module in the experiments package."""
    found = []
    for info in sorted(pkgutil.iter_modules(_registry.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_registry.__name__}.{info.name}")
        found.append((info.name, (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""))
    return found


def load_experiment(name_or_path: str) -> ModuleType:
    """Import a registered experiment by name, or a user's `.py` file by path."""
    if name_or_path.endswith(".py") or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise UsageError(f"--experiment={name_or_path}: no such file; give a registered name or a .py path")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        names = [info.name for info in pkgutil.iter_modules(_registry.__path__)]
        if name_or_path not in names:
            close = difflib.get_close_matches(name_or_path, names, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise UsageError(f"unknown experiment '{name_or_path}': {hint}run with --list_experiments to see them all")
        module = importlib.import_module(f"{_registry.__name__}.{name_or_path}")
    for required in ("get_config", "build"):
        if not callable(getattr(module, required, None)):
            raise UsageError(f"experiment '{name_or_path}' does not define {required}(); see experiments/")
    return module


def get_config(name_or_path: str) -> ml_collections.ConfigDict:
    """The experiment's config, with `experiment` set so that `build_experiment` can find its pieces again."""
    config = load_experiment(name_or_path).get_config()
    config.experiment = name_or_path
    return config


def build_experiment(config: ml_collections.ConfigDict) -> Experiment:
    """The model, task and data of `config.experiment`, built from the (overridden) config."""
    experiment = load_experiment(config.experiment).build(config)
    if not isinstance(experiment, Experiment):
        raise UsageError(f"{config.experiment}: build(config) must return jaxdl.Experiment(model, task, data)")
    if config.matmul_dtype and not hasattr(experiment.model, "matmul_dtype"):
        raise UsageError(
            f"--config.matmul_dtype={config.matmul_dtype}: {type(experiment.model).__name__} (experiment "
            f"{config.experiment}) has no matmul_dtype; use --config.dtype to change its compute dtype"
        )
    return experiment


def load_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a run was trained with (`workdir/config.json`, JSON lists back to the tuples they were), laid
    over its experiment's current `get_config()`: a field added to jaxdl or to the experiment since the run was
    trained takes its default instead of being missing."""
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise UsageError(f"{path} not found: {workdir} is not a jaxdl run directory")
    as_tuples = lambda value: (
        tuple(as_tuples(v) for v in value)
        if isinstance(value, list)
        else {k: as_tuples(v) for k, v in value.items()}
        if isinstance(value, dict)
        else value
    )
    saved = ml_collections.ConfigDict(as_tuples(json.loads(path.read_text())))
    try:
        config = get_config(saved.experiment)
        config.update(saved)
        if "ema_decay" not in saved.get("optim", {}):  # trained before jaxdl kept averages: its checkpoints have none
            config.optim.ema_decay = 0.0
    except Exception:  # the experiment file is gone or runs differently now: the saved config as it is
        return saved
    return config


def set_string_field(config: ml_collections.ConfigDict, path: str, value: str) -> None:
    """config[a][b] = value for path "a.b", for a string field only (see jaxdl.main's keyword overrides)."""
    *parents, name = path.split(".")
    node = config
    for part in parents:
        if part not in node:
            raise UsageError(f"unknown config key '{part}' in --config.{path}")
        node = node[part]
    if name not in node:
        raise UsageError(f"unknown config key '{name}' in --config.{path}")
    if not isinstance(node[name], str):
        raise UsageError(f"--config.{path}={value}: expected a {type(node[name]).__name__}")
    node[name] = value


def default_workdir(name_or_path: str) -> str:
    return f"runs/{Path(name_or_path).stem}"


def _positive(config: ml_collections.ConfigDict, *keys: str, allow_zero: bool = False) -> None:
    for key in keys:
        value = config
        for part in key.split("."):
            value = value[part]
        if value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise UsageError(f"--config.{key}={value}: must be {bound}")


def validate(config: ml_collections.ConfigDict) -> None:
    """Reject values that cannot work before anything is built or written."""
    _positive(config, "data.batch_size", "data.eval_batch_size", "train.log_every_steps", "checkpoint.keep")
    _positive(config, "optim.learning_rate")
    _positive(
        config,
        "train.num_epochs",
        "train.max_steps",
        "train.eval_every_steps",
        "checkpoint.every_steps",
        "data.validation_size",
        "data.train_examples",
        "data.test_examples",
        "optim.warmup_steps",
        "optim.weight_decay",
        "optim.grad_clip_norm",
        "optim.backbone_lr_scale",
        "optim.min_learning_rate",
        "optim.b2",
        "lora.rank",
        "lora.alpha",
        "train.peak_flops",
        "mesh.cpu_devices",
        allow_zero=True,
    )
    if config.data.prefetch < -1:
        raise UsageError(f"--config.data.prefetch={config.data.prefetch}: must be >= 0, or -1 for the default")
    if config.train.num_epochs == 0 and config.train.max_steps == 0:
        raise UsageError("train.num_epochs and train.max_steps are both 0: set one of them to run any steps")
    if config.dtype not in ("float32", "bfloat16"):
        raise UsageError(f"--config.dtype={config.dtype}: must be float32 or bfloat16")
    if config.matmul_dtype not in ("", "float32", "bfloat16"):
        raise UsageError(f"--config.matmul_dtype={config.matmul_dtype}: must be bfloat16, float32 or empty")
    if config.init.skip and not config.init["from"]:
        raise UsageError("--config.init.skip needs --config.init.from (the checkpoint to start from)")
    _positive(config, "optim.step_every_steps", "optim.step_factor")
    _positive(config, "optim.l1", "train.patience", "train.min_delta", allow_zero=True)
    if not 0 <= config.optim.ema_decay < 1:
        raise UsageError(f"--config.optim.ema_decay={config.optim.ema_decay}: must be in [0, 1), e.g. 0.99; 0 = off")
    if config.train.early_stopping_mode not in ("auto", "max", "min"):
        raise UsageError(f"--config.train.early_stopping_mode={config.train.early_stopping_mode}: use auto, max or min")
    if not 0 <= config.compress.sparsity < 1:
        raise UsageError(f"--config.compress.sparsity={config.compress.sparsity}: must be in [0, 1), e.g. 0.5")
    if config.compress.scope not in ("global", "per_layer"):
        raise UsageError(f"--config.compress.scope={config.compress.scope}: use global or per_layer")
