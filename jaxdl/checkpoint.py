"""Checkpoints of one run, through orbax: the train state and the data iterator's position, saved together.

orbax writes each step to a temporary directory and renames it when complete, so a checkpoint is either whole
or invisible; saves run in the background while training continues.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from jaxdl import paths
from jaxdl.errors import UsageError


class Checkpoints:
    """The checkpoints under `workdir/checkpoints`, keeping the newest `keep`."""

    def __init__(self, directory: str | Path, keep: int):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: Any, data_position: dict, metadata: dict, extras: dict[str, dict] | None = None) -> None:
        """Start saving `state` (at its own step) in the background; returns before the write is done.

        `extras` are more JSON items saved beside it, e.g. {"early_stopping": ...}; see `read_extra`."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return  # already saved, e.g. the end of training fell on an epoch boundary
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_position),
            metadata=ocp.args.JsonSave(metadata),
            **{name: ocp.args.JsonSave(value) for name, value in (extras or {}).items()},
        )
        with self._disk_errors(step):
            self.manager.save(step, args=args, force=True)

    @contextlib.contextmanager
    def _disk_errors(self, step: int | None):
        """A full disk is the user's to fix: say so in one line. (orbax reports background write errors at the next
        save or at close.) The unfinished save stays invisible; the checkpoints before it are intact."""
        try:
            yield
        except Exception as e:
            if not ("No space left on device" in str(e) or getattr(e, "errno", None) == errno.ENOSPC):
                raise
            raise UsageError(
                f"no space left on the disk of {self.directory} while saving a checkpoint"
                f"{'' if step is None else f' (step {step})'}: free some space or use another --workdir; "
                "the checkpoints already there are intact"
            ) from None

    def restore_newest_readable(self, abstract_state: Any) -> tuple[Any, dict, int] | None:
        """(state, data position, step) of the newest checkpoint that reads back whole; None when there is none.

        A damaged checkpoint (truncated or garbled files) is moved to WORKDIR/damaged_checkpoints/STEP — kept, never
        deleted — with a warning, and the previous one is tried. A checkpoint of a different model is bad input.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                self.check_fits(abstract_state, step)
                state, position = self.restore(abstract_state, step)
                return state, position, step
            except UsageError:
                raise
            except Exception as e:  # any read failure: tensorstore, JSON, missing files
                self.set_aside(step, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")
        return None

    def check_fits(self, abstract_state: Any, step: int) -> None:
        """UsageError if checkpoint `step` holds arrays of other paths or shapes than `abstract_state`."""
        saved = _array_shapes(read_state_metadata(self.directory / str(step)))
        expected = {paths.path_name(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(abstract_state)}
        differences = [f"{n}: {saved.get(n)} saved, {s} expected" for n, s in expected.items() if saved.get(n) != s]
        differences += [f"{n}: saved, not in this model" for n in saved if n not in expected]
        if differences and all(d.startswith("ema_params") for d in differences):
            had = any(n.startswith("ema_params") for n in saved)
            raise UsageError(
                f"the checkpoint {self.directory / str(step)} was written {'with' if had else 'without'} a moving "
                f"average of the parameters: resume with --config.optim.ema_decay set as it was trained "
                f"({'> 0' if had else '0'}), or use a new --workdir"
            )
        if differences:
            raise UsageError(
                f"the checkpoint {self.directory / str(step)} is of a different model ({len(differences)} arrays "
                f"differ, e.g. {'; '.join(differences[:3])}); use a new --workdir, or the config it was trained with"
            )

    def set_aside(self, step: int, reason: str) -> None:
        damaged = self.directory.parent / "damaged_checkpoints" / str(step)
        if jax.process_index() == 0:
            damaged.parent.mkdir(exist_ok=True)
            shutil.move(str(self.directory / str(step)), str(damaged))
            print(
                f"warning: checkpoint {step} is damaged ({reason}); moved it to {damaged}; trying the one before",
                file=sys.stderr,
            )
        multihost_utils.sync_global_devices(f"jaxdl set aside checkpoint {step}")
        self.manager.reload()

    def restore(self, abstract_state: Any, step: int) -> tuple[Any, dict]:
        """The state at `step`, laid out as `abstract_state` says (shapes, dtypes, shardings), and the data position."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
        restored = self.manager.restore(step, args=args)
        return restored.state, restored.data

    def read_extra(self, step: int, name: str) -> dict | None:
        """The JSON item `name` saved with checkpoint `step` (see `save`); None when that checkpoint has none."""
        if not (self.directory / str(step) / name).is_dir():
            return None
        return self.manager.restore(step, args=ocp.args.Composite(**{name: ocp.args.JsonRestore()}))[name]

    def close(self) -> None:
        """Wait for background saves to finish. Closing twice is harmless."""
        if self.manager is None:
            return
        manager, self.manager = self.manager, None
        with self._disk_errors(None):
            manager.wait_until_finished()
        manager.close()


class BestCheckpoint:
    """WORKDIR/best: the train state of the best evaluation so far, chosen by orbax's best-N policy (N = 1) on
    `metric`. A directory of its own, so the best-N policy never deletes the newest checkpoints a resume needs,
    nor `checkpoint.keep` the best one. Saves are synchronous: the state's buffers are donated to the next step."""

    def __init__(self, directory: str | Path, metric: str, mode: str):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda metrics: metrics[metric], best_mode=mode, enable_async_checkpointing=False
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, state: Any, metrics: dict[str, float], metadata: dict) -> None:
        step = int(jax.device_get(state.step))
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(metadata))
        numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        self.manager.save(step, args=args, metrics=numbers, force=True)

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def remove_after(self, step: int) -> None:
        """Delete best checkpoints newer than `step`: on resuming at `step` they belong to steps run again."""
        for saved in self.manager.all_steps():
            if saved > step:
                self.manager.delete(saved)

    def restore(self, abstract_state: Any, step: int) -> Any:
        return self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))).state

    def close(self) -> None:
        self.manager.close()


def step_directory(path: str | Path) -> Path:
    """The checkpoint a path names: a run's workdir (its newest checkpoint) or one checkpoint step directory."""
    path = Path(path).absolute()  # orbax's metadata reader finds nothing under a relative path
    if (path / "state").is_dir():
        return path
    if (path / "checkpoints").is_dir():
        steps = sorted(int(p.name) for p in (path / "checkpoints").iterdir() if p.name.isdigit())
        if steps:
            return path / "checkpoints" / str(steps[-1])
    raise UsageError(
        f"{path} holds no checkpoint: give a run's workdir or a step directory like WORKDIR/checkpoints/1000"
    )


@contextlib.contextmanager
def _orbax_errors_only():
    """absl logging at ERROR and above only, for orbax warnings about reads done on purpose."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def read_state_metadata(step_dir: Path) -> Any:
    """The tree of array metadata (shapes, dtypes) of a checkpoint's train state, without reading the arrays."""
    with _orbax_errors_only():  # orbax warns that the step's metadata file is one level up: it is
        return ocp.StandardCheckpointer().metadata(step_dir / "state").item_metadata


def _array_shapes(metadata: Any) -> dict[str, tuple]:
    return {paths.path_name(p): tuple(m.shape) for p, m in jax.tree_util.tree_leaves_with_path(metadata)}


def read_variables(path: str | Path, sharding: jax.sharding.Sharding) -> dict:
    """{"params": ..., "model_state": ...} of a checkpoint, placed with `sharding` whatever layout wrote it.

    The optimizer state is not read (orbax partial restore), so fine-tuning a large model does not pay for it.
    """
    step_dir = step_directory(path)
    on_disk = read_state_metadata(step_dir)
    # A run that kept the parameters' moving average was evaluated with it: that is the model to start from.
    params = "ema_params" if jax.tree.leaves(on_disk.get("ema_params")) else "params"
    target = {
        key: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), on_disk[key])
        for key in (params, "model_state")
    }
    restore_args = jax.tree.map(lambda t: ocp.ArrayRestoreArgs(sharding=t.sharding), target)
    args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
    restored = ocp.PyTreeCheckpointer().restore(step_dir / "state", args=args)
    return {"params": restored[params], "model_state": restored["model_state"]}


def read_metadata(path: str | Path) -> dict:
    """The dataset metadata (JSON) saved with a checkpoint, e.g. a language model's vocabulary: a run's workdir
    (its newest checkpoint) or a step directory."""
    step_dir = step_directory(path)
    with _orbax_errors_only():  # orbax warns that a read-only manager will not save: it is not meant to
        manager = ocp.CheckpointManager(step_dir.parent, options=ocp.CheckpointManagerOptions(read_only=True))
        args = ocp.args.Composite(metadata=ocp.args.JsonRestore())
        metadata = manager.restore(int(step_dir.name), args=args).metadata
        manager.close()
    return metadata
