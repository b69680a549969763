"""Early stopping on a validation metric, and the best checkpoint that the final test evaluates.

`EarlyStopping` is the decision alone (a plain object, JSON state); `Monitor` is what the training loop calls:
it checks the config, feeds evaluations to the decision, keeps the best state in WORKDIR/best (orbax best-N,
`jaxdl.checkpoint.BestCheckpoint`) and hands the loop that state for the final test.

Resuming: the decision's state is saved as a JSON item of every regular checkpoint, so a resumed run continues
the count exactly, and one that had stopped does not train again. A regular checkpoint at step S is written after
the evaluation at S, so it includes it. Best checkpoints newer than the resumed step are deleted: those steps run
again (bit-identically on the same devices) and save them again.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxdl import data as data_lib
from jaxdl.checkpoint import BestCheckpoint, Checkpoints
from jaxdl.errors import UsageError

LOWER_IS_BETTER = ("loss", "perplexity", "error")  # mode "auto" minimises metrics whose name contains one of these


@dataclasses.dataclass
class EarlyStopping:
    """Stop after `patience` evaluations in a row that do not beat the best value by more than `min_delta`."""

    metric: str
    mode: str = "max"  # "max" or "min"
    patience: int = 5
    min_delta: float = 0.0
    best_value: float | None = None
    best_step: int | None = None
    evaluations_without_improvement: int = 0
    stopped_at: int | None = None  # the step of the evaluation that ended training

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    def update(self, step: int, value: float) -> bool:
        """Record the evaluation at `step`; True when it is the new best. NaN or Inf never improves."""
        value = float(value)
        if self.best_value is None:
            improved = math.isfinite(value)
        elif self.mode == "max":
            improved = value > self.best_value + self.min_delta
        else:
            improved = value < self.best_value - self.min_delta
        if improved:
            self.best_value, self.best_step, self.evaluations_without_improvement = value, step, 0
        else:
            self.evaluations_without_improvement += 1
            if self.evaluations_without_improvement >= self.patience:
                self.stopped_at = step
        return improved

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state`: the history (best, count, stop), kept only when it is of the same metric and
        mode; patience and min_delta stay the config's."""
        if (state.get("metric"), state.get("mode")) != (self.metric, self.mode):
            return
        for key in ("best_value", "best_step", "evaluations_without_improvement", "stopped_at"):
            setattr(self, key, state[key])


def resolve_mode(metric: str, mode: str) -> str:
    """ "max" or "min"; "auto" minimises losses and perplexities and maximises everything else."""
    if mode != "auto":
        return mode
    return "min" if any(word in metric.lower() for word in LOWER_IS_BETTER) else "max"


def evaluation_metric_names(run: Any) -> list[str] | None:
    """The names the task's evaluation reports, found without computing anything: the eval step's output shapes,
    summarized as ones. None when the task's summary cannot be traced that way."""
    try:
        batch = next(data_lib.eval_batches(run.experiment.data, run.eval_source, 1, 0, 1))
        step = functools.partial(run.experiment.task.eval_step, run.experiment.model)
        sums = jax.eval_shape(step, run.state_shapes, batch)
        return list(run.experiment.task.summarize(jax.tree.map(lambda s: np.ones(s.shape, s.dtype), sums)))
    except Exception:
        return None


class Monitor:
    """Early stopping and the best checkpoint for one run; inert when train.early_stopping_metric is ""."""

    def __init__(self, config: ml_collections.ConfigDict, run: Any, workdir: str | Path):
        train = config.train
        self.metric = train.get("early_stopping_metric", "")
        self.directory = Path(workdir) / "best"
        self.best: BestCheckpoint | None = None
        self.stopped_before_resume = False
        self.metadata = run.experiment.data.metadata
        if not self.metric:
            self.decision = None
            return
        if run.eval_source is run.test_source:
            raise UsageError(
                f"--config.train.early_stopping_metric={self.metric} needs a validation split: set "
                "--config.data.validation_size=N (examples held out of train); stopping on the test split would "
                "choose the model by its test score"
            )
        names = evaluation_metric_names(run)
        if names is not None and self.metric not in names:
            raise UsageError(
                f"--config.train.early_stopping_metric={self.metric}: the evaluation reports {', '.join(names)}"
            )
        if train.early_stopping_mode not in ("auto", "max", "min"):
            raise UsageError(f"--config.train.early_stopping_mode={train.early_stopping_mode}: use auto, max or min")
        mode = resolve_mode(self.metric, train.early_stopping_mode)
        self.decision = EarlyStopping(self.metric, mode, train.patience, train.min_delta)

    @property
    def stopped(self) -> bool:
        return self.decision is not None and self.decision.stopped

    def resume(self, checkpoints: Checkpoints, step: int | None) -> None:
        """Open WORKDIR/best; when resuming at `step`, continue the decision saved with that checkpoint."""
        if self.decision is None:
            return
        self.best = BestCheckpoint(self.directory, self.metric, self.decision.mode)
        saved = None if step is None else checkpoints.read_extra(step, "early_stopping")
        if saved is not None:
            self.decision.load_state_dict(saved)
        self.stopped_before_resume = self.decision.stopped
        self.best.remove_after(step or 0)

    def update(self, step: int, metrics: dict[str, float], state: Any, say: Callable[[str], None]) -> None:
        """Feed the evaluation at `step`; save `state` as the best when it is."""
        if self.decision is None:
            return
        if self.metric not in metrics:
            raise UsageError(
                f"--config.train.early_stopping_metric={self.metric}: the evaluation reports {list(metrics)}"
            )
        if self.decision.update(step, metrics[self.metric]):
            self.best.save(state, metrics, self.metadata)
        elif self.decision.stopped:
            say(
                f"early stopping at step {step}: eval {self.metric} has not improved for "
                f"{self.decision.evaluations_without_improvement} evaluations (best "
                f"{self.decision.best_value:.4f} at step {self.decision.best_step})"
            )

    def extras(self) -> dict[str, dict]:
        """JSON items for the regular checkpoint: the decision's state."""
        return {} if self.decision is None else {"early_stopping": self.decision.state_dict()}

    def final_state(self, state: Any, abstract_state: Any, say: Callable[[str], None]) -> tuple[Any, dict]:
        """(the state the final test evaluates, what to add to the test metrics): the best checkpoint's."""
        if self.decision is None:
            return state, {}
        best_step = self.decision.best_step
        if self.stopped_before_resume:
            say(f"this run had stopped early at step {self.decision.stopped_at}; it does not train further")
        if best_step is None or best_step not in self.best.manager.all_steps():
            say(f"no best checkpoint in {self.directory} (no finite eval {self.metric} yet): testing the final state")
            self.best.close()
            return state, {}
        restored = self.best.restore(abstract_state, best_step)
        self.best.close()
        say(
            f"final test on the best checkpoint: step {best_step} (eval {self.metric} "
            f"{self.decision.best_value:.4f}), from {self.directory}"
        )
        return restored, {"checkpoint_step": best_step}
