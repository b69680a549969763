"""What a run tells its user: metrics.jsonl, TensorBoard events, progress bars and readable lines.

Only process 0 writes or prints; the other processes get a reporter that does nothing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import tqdm

# Train-line fields that describe speed, not learning: left out of the readable lines' first part.
TIMING_FIELDS = ("steps_per_sec", "examples_per_sec", "tokens_per_sec", "mfu")


class Reporter:
    """metrics.jsonl + TensorBoard + two progress bars (the whole run and the current epoch, each with its ETA)."""

    def __init__(self, workdir: Path, total_steps: int, initial_step: int, steps_per_epoch: int = 0):
        self.active = jax.process_index() == 0
        if not self.active:
            return
        self.total_steps, self.steps_per_epoch, self.step = total_steps, steps_per_epoch, initial_step
        # Appended to, so a resumed run keeps its history; closed in close().
        self.metrics_file = open(workdir / "metrics.jsonl", "a")  # noqa: SIM115
        self.tensorboard = summary_writer(workdir / "tensorboard")
        # tqdm disables itself when stderr is not a terminal (CI logs); the eval lines below are printed anyway.
        self.progress = tqdm.tqdm(
            total=total_steps, initial=initial_step, unit="step", disable=None, smoothing=0.1, desc="total", position=0
        )
        self.epoch_bar = None
        if steps_per_epoch and total_steps > steps_per_epoch and not self.progress.disable:
            self.epoch_bar = tqdm.tqdm(total=steps_per_epoch, unit="step", leave=False, smoothing=0.1, position=1)
            self._start_epoch(initial_step)
        self.started = time.time()

    def _start_epoch(self, step: int) -> None:
        epoch, done = divmod(step, self.steps_per_epoch)
        epochs = -(-self.total_steps // self.steps_per_epoch)
        self.epoch_bar.set_description(f"epoch {epoch + 1}/{epochs}", refresh=False)
        self.epoch_bar.reset(total=min(self.steps_per_epoch, self.total_steps - step + done))
        self.epoch_bar.update(done)

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        """One metrics.jsonl line and one TensorBoard scalar per value; a readable line for evaluations."""
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
            self.print(self.line(step, split, metrics))

    def line(self, step: int, split: str, metrics: dict[str, float]) -> str:
        """e.g. "step 468/1404 (epoch 1.00) eval: loss 0.0347, accuracy 0.9885, macro_f1 0.9884, count 10000
        [31 s]": learning figures first, speed after them, time since the start last."""
        where = f"step {step}/{self.total_steps}"
        if self.steps_per_epoch:
            where += f" (epoch {step / self.steps_per_epoch:.2f})"
        learning = {k: v for k, v in metrics.items() if k not in TIMING_FIELDS}
        speed = {k: v for k, v in metrics.items() if k in TIMING_FIELDS}
        text = f"{where} {split}: " + format_metrics(learning)
        if speed:
            text += "; " + format_metrics(speed)
        return text + f" [{time.time() - self.started:.0f} s]"

    def advance(self, steps: int = 1) -> None:
        if not self.active:
            return
        self.progress.update(steps)
        self.step += steps
        if self.epoch_bar is not None:
            if self.step % self.steps_per_epoch == 0 and self.step < self.total_steps:
                self._start_epoch(self.step)
            else:
                self.epoch_bar.update(steps)

    def print(self, line: str) -> None:
        if self.active:
            tqdm.tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        if self.active:
            if self.epoch_bar is not None:
                self.epoch_bar.close()
            self.progress.close()
            self.tensorboard.close()
            self.metrics_file.close()


def summary_writer(directory: Path):
    """tensorboardX's SummaryWriter, imported here rather than with this module, and without torch.

    tensorboardX imports torch whenever it is installed (for torch tensors, which jaxdl never logs): 2-5 s of
    every start-up on this project's machine, where torch is installed for the benchmarks. Hiding it during the
    import (`sys.modules["torch"] = None` makes `import torch` raise ImportError, which tensorboardX handles) costs
    nothing; a process that has already imported torch keeps it.
    """
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide_torch:
            del sys.modules["torch"]
    return SummaryWriter(str(directory))


def format_value(value: float) -> str:
    """4 decimals for the usual range; scientific for tiny values (learning rates), whole numbers from 100 on."""
    if not isinstance(value, float):
        return str(value)
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3e}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4f}"


def format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {format_value(value)}" for name, value in metrics.items())


def append_metrics(workdir: str | Path, step: int, split: str, metrics: dict[str, float]) -> None:
    """One more metrics.jsonl line (process 0 only), e.g. from `--mode=eval`."""
    if jax.process_index() == 0:
        with open(Path(workdir) / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
