"""What a run tells its user: metrics.jsonl, TensorBoard events, a progress bar and readable lines.

Only process 0 writes or prints; the other processes get a reporter that does nothing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import tqdm
from tensorboardX import SummaryWriter


class Reporter:
    def __init__(self, workdir: Path, total_steps: int, initial_step: int):
        self.active = jax.process_index() == 0
        if not self.active:
            return
        # Appended to, so a resumed run keeps its history; closed in close().
        self.metrics_file = open(workdir / "metrics.jsonl", "a")  # noqa: SIM115
        self.tensorboard = SummaryWriter(str(workdir / "tensorboard"))
        # tqdm disables itself when stderr is not a terminal (CI logs); the eval lines below are printed anyway.
        self.progress = tqdm.tqdm(total=total_steps, initial=initial_step, unit="step", disable=None, smoothing=0.1)
        self.started = time.time()

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        """One metrics.jsonl line and one TensorBoard scalar per value."""
        if not self.active:
            return
        record = {"step": step, "split": split, **metrics}
        self.metrics_file.write(json.dumps(record) + "\n")
        self.metrics_file.flush()
        for name, value in metrics.items():
            self.tensorboard.add_scalar(f"{split}/{name}", value, step)
        self.tensorboard.flush()
        if split == "train" and not self.progress.disable:
            self.progress.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        else:  # eval lines always; train lines too when there is no progress bar (output not a terminal)
            self.print(f"step {step} {split}: " + ", ".join(f"{k} {_format(v)}" for k, v in metrics.items()))

    def advance(self, steps: int = 1) -> None:
        if self.active:
            self.progress.update(steps)

    def print(self, line: str) -> None:
        if self.active:
            tqdm.tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        if self.active:
            self.progress.close()
            self.tensorboard.close()
            self.metrics_file.close()


def _format(value: float) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
