"""Checkpoints of one run, through orbax: the train state and the data iterator's position, saved together.

orbax writes each step to a temporary directory and renames it when complete, so a checkpoint is either whole
or invisible; saves run in the background while training continues.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

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
