"""Checkpoints of one run, through orbax: the train state and the data iterator's position, saved together.

orbax writes each step to a temporary directory and renames it when complete, so a checkpoint is either whole
or invisible; saves run in the background while training continues.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from jaxdl.errors import UsageError


class Checkpoints:
    """The checkpoints under `workdir/checkpoints`, keeping the newest `keep`."""

    def __init__(self, directory: str | Path, keep: int):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: Any, data_position: dict, metadata: dict) -> None:
        """Start saving `state` (at its own step) in the background; returns before the write is done."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return  # already saved, e.g. the end of training fell on an epoch boundary
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_position),
            metadata=ocp.args.JsonSave(metadata),
        )
        self.manager.save(step, args=args, force=True)

    def restore(self, abstract_state: Any, step: int) -> tuple[Any, dict]:
        """The state at `step`, laid out as `abstract_state` says (shapes, dtypes, shardings), and the data position."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
        try:
            restored = self.manager.restore(step, args=args)
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(
                f"the checkpoint {self.directory / str(step)} does not fit this experiment's model "
                f"({str(e).splitlines()[0][:200]}); use a new --workdir, or the config it was trained with"
            ) from None
        return restored.state, restored.data

    def metadata(self, step: int) -> dict:
        """The dataset metadata saved with `step` (e.g. the vocabulary a language model was trained with)."""
        return self.manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())).metadata

    def close(self) -> None:
        """Wait for background saves to finish."""
        self.manager.wait_until_finished()
        self.manager.close()


def step_directory(path: str | Path) -> Path:
    """The checkpoint a path names: a run's workdir (its newest checkpoint) or one checkpoint step directory."""
    path = Path(path)
    if (path / "state").is_dir():
        return path
    if (path / "checkpoints").is_dir():
        steps = sorted(int(p.name) for p in (path / "checkpoints").iterdir() if p.name.isdigit())
        if steps:
            return path / "checkpoints" / str(steps[-1])
    raise UsageError(
        f"{path} holds no checkpoint: give a run's workdir or a step directory like WORKDIR/checkpoints/1000"
    )


def read_variables(path: str | Path, sharding: jax.sharding.Sharding) -> dict:
    """{"params": ..., "model_state": ...} of a checkpoint, placed with `sharding` whatever layout wrote it.

    The optimizer state is not read (orbax partial restore), so fine-tuning a large model does not pay for it.
    """
    state_dir = step_directory(path) / "state"
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # orbax warns that the step's metadata file is one level up: it is
    try:
        on_disk = ocp.StandardCheckpointer().metadata(state_dir).item_metadata
    finally:
        logging.set_verbosity(verbosity)
    target = {
        key: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), on_disk[key])
        for key in ("params", "model_state")
    }
    restore_args = jax.tree.map(lambda t: ocp.ArrayRestoreArgs(sharding=t.sharding), target)
    args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
    return ocp.PyTreeCheckpointer().restore(state_dir, args=args)
