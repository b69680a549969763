"""A SIGTERM or a preemption notice turns into a clean stop of the training loop at a step, with a checkpoint."""

from __future__ import annotations

import signal
import threading

import jax
from jax.experimental import multihost_utils


class StopRequest:
    """SIGTERM (a preemption notice) asks the loop to finish its step, save a checkpoint and return.

    The signal handler only sets a flag: saving inside a handler could interrupt a save already under way. With
    several processes, jax's preemption service picks a step at which all of them stop together.
    """

    def __init__(self):
        self.flag, self.previous = False, None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._set)

    def _set(self, signum, frame) -> None:
        self.flag = True

    def requested(self, step: int) -> bool:
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.flag

    def release(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
