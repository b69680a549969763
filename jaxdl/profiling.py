"""`--profile_steps=N:M`: a jax.profiler trace of training steps N..M (as the logs number them: step N is the N-th
update) in WORKDIR/profile, for TensorBoard's profile plugin (`tensorboard --logdir WORKDIR/profile`) or Perfetto
(the .xplane.pb / .trace.json.gz files under WORKDIR/profile/plugins/profile/).

Steps start after the first one compiled, so a window from step 2 on shows steady-state steps only. The trace
stops after step M's results exist (`block_until_ready`): jax dispatches asynchronously, so without waiting the
trace would end before the device work it is meant to show.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax
import tqdm

from jaxdl.errors import UsageError


def parse_steps(spec: str) -> tuple[int, int] | None:
    """Parse "N:M" to (N, M); "" gives None; anything else is a UsageError."""
    if not spec:
        return None
    first, _, last = spec.partition(":")
    try:
        steps = int(first), int(last or first)
    except ValueError:
        raise UsageError(
            f"--profile_steps={spec}: expected N:M, two step numbers, e.g. --profile_steps=10:15"
        ) from None
    if not 1 <= steps[0] <= steps[1]:
        raise UsageError(f"--profile_steps={spec}: need 1 <= N <= M (steps are numbered from 1)")
    return steps


class StepProfiler:
    """Starts a trace before step N and stops it after step M; does nothing without a window."""

    def __init__(self, spec: str, workdir: Path):
        self.window = parse_steps(spec)
        self.directory = Path(workdir) / "profile"
        self.tracing = False

    def before(self, step: int) -> None:
        """Call before running update number `step` (1-based)."""
        if self.window and not self.tracing and self.window[0] <= step <= self.window[1]:
            jax.profiler.start_trace(str(self.directory))
            self.tracing = True

    def after(self, step: int, state: Any) -> None:
        """Call after update number `step`; `state` is waited for before the trace stops."""
        if self.tracing and step >= self.window[1]:
            self.stop(state)

    def stop(self, state: Any = None) -> None:
        if self.tracing:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.tracing = False
            if jax.process_index() == 0:
                message = f"profile of steps {self.window[0]}..{self.window[1]} written to {self.directory}"
                tqdm.tqdm.write(message, file=sys.stderr)
