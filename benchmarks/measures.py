"""What one worker's raw result measures: steady steps/s, time to a target, data waiting, a checkpoint's cost.

Definitions (the same for every arm):
- steady steps/s: from the first timestamp (step 50, after warm-up and compilation) to the last, evaluation time in
  between left out. jaxdl's timestamps are taken as each train line is written (right after the loop's host sync);
  the bare loop and PyTorch stamp after a sync every 50 steps.
- time to a target: seconds from the worker process's start (before importing jax/torch: imports, data loading,
  compilation and training count) to the first evaluation that meets it, evaluation time left out. Evaluations run
  every 50 steps (MNIST, 10,000 test images) or 250 steps (GPT, 2,000 validation windows) on both sides.
- data waiting (benchmark 6): 1 − steps/s of the real pipeline / steps/s with one device-resident batch reused
  (no iterator, no transfer). The loop dispatches step k asynchronously and then fetches batch k+1, so host time in
  the pipeline overlaps compute; only what the synthetic arm saves is time lost. The host time itself is shown too.
- checkpoint cost (benchmark 7): the steady span of a run saving every epoch over that of a run saving none, paired
  per repeat; and (7i) the same slowdown estimated inside each saving run alone (`save_cost_in_run`), which the
  VM's drift between processes does not enter.
"""

from __future__ import annotations

import itertools
import math
import statistics

from benchmarks.common import GPT_TARGET_LOSS

INF = math.inf


def rate(result: dict) -> float:
    """Steady steps/s of one arm's run (see the module docstring)."""
    stamps = result["train_stamps"]
    (s0, t0, _), (s1, t1, _) = stamps[1], stamps[-1]
    evals = sum(e["end"] - e["start"] for e in result.get("evals", []) if t0 < e["start"] < t1)
    return (s1 - s0) / (t1 - t0 - evals)


def main_cpu_per_step(result: dict) -> float:
    """Seconds of CPU the main thread used per step over the steady span (as `rate`'s, but evaluations are not left
    out: the loop arms it is read from run none): the loop's own host work, which on a 2-core machine is taken from
    XLA's compute threads. Unlike steps/s, the VM's drift barely moves it. nan for results without the stamps
    (PyTorch's, earlier suites')."""
    stamps = result.get("main_cpu_stamps", [])
    if len(stamps) < 3:
        return math.nan
    (s0, c0), (s1, c1) = stamps[1], stamps[-1]
    return (c1 - c0) / (s1 - s0)


def data_fraction(result: dict) -> float:
    """Share of the steady span spent in the train iterator's next() and the host-to-device batch assembly."""
    (_, t0, d0), (_, t1, d1) = result["train_stamps"][1], result["train_stamps"][-1]
    return (d1 - d0) / (t1 - t0)


def step_speed(seconds_per_step: dict) -> float:
    """Benchmark 1s: the median over interleaved rounds of the bare step's time over jaxdl's (jaxdl's steps/s over
    the bare loop's, as figure 1)."""
    return statistics.median(b / j for b, j in zip(seconds_per_step["bare"], seconds_per_step["jaxdl"], strict=True))


def save_cost_in_run(result: dict, spill: float = 1.0) -> float:
    """Benchmark 7 estimated inside one run that saves checkpoints: the train-line intervals that a save overlaps
    (its call, which waits for the step to finish first, and its background write, `spill` seconds after the call)
    took `extra` seconds more than the same steps at the run's median pace in its other intervals; the figure is
    extra / (steady span - extra), the run's slowdown against itself without the saves. Unlike the two-run ratio,
    the VM's drift between processes does not enter it. nan without a save or an interval free of one."""
    stamps = result["train_stamps"][1:]
    intervals = [(t0, t1, s1 - s0) for (s0, t0, _), (s1, t1, _) in itertools.pairwise(stamps)]
    saved = lambda t0, t1: any(start < t1 and end + spill > t0 for start, end in result.get("saves", []))
    free = [(t1 - t0) / steps for t0, t1, steps in intervals if not saved(t0, t1)]
    if not free or len(free) == len(intervals):
        return math.nan
    pace = statistics.median(free)
    extra = sum(t1 - t0 - steps * pace for t0, t1, steps in intervals if saved(t0, t1))
    span = stamps[-1][1] - stamps[0][1]
    return extra / (span - extra)


def time_to(result: dict, key: str, target: float, below: bool) -> float:
    for e in result.get("evals", []):
        if (e[key] <= target) if below else (e[key] >= target):
            return e["train_seconds"]
    return INF


def median(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else math.nan


def paired(results: dict, *arms: str):
    """Per-repeat tuples of the arms' results, for repeats where none of them failed."""
    return [rs for rs in zip(*(results[a] for a in arms), strict=False) if not any("error" in r for r in rs)]


def gpt_wall(result: dict) -> float:
    """Training seconds of a GPT run until its validation loss first reached the target (inf if never)."""
    return time_to(result, "loss", GPT_TARGET_LOSS, True)
