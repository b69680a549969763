"""How the jaxdl arms observe `jaxdl.train` without changing it: `Probe` wraps a few module attributes the loop looks
up at call time. It timestamps the loop's train lines, times evaluations (so they can be left out of training time),
records XLA's FLOP count of the compiled step, the time spent waiting for batches and each checkpoint save, and
stops a run early once its target is reached (the learning-rate schedule depends on the configured total, not on
where a run stops, so stopping early changes nothing before that point). `tests/test_benchmarks.py` checks that
the loop still calls everything it wraps.
"""

import time
from pathlib import Path

import jax
from absl import logging

import jaxdl
from benchmarks import common
from jaxdl import data as data_lib
from jaxdl import flops, reporting, sharding, training


class TargetReached(Exception):
    """Raised from the probe's evaluation wrapper to end a run once its last target is met."""


class Probe:
    """Observes one `jaxdl.train` call by wrapping a few module attributes the loop looks up at call time."""

    def __init__(self, stop_when=None, synthetic: bool = False):
        # (step, perf_counter, data_seconds so far) as each train line is written: after that step's host sync
        self.train_stamps: list[tuple[int, float, float]] = []
        # (step, the main thread's CPU seconds so far) at the same moments: the loop's own host work (figure 1c)
        self.main_cpu_stamps: list[tuple[int, float]] = []
        self.evals: list[dict] = []  # step, metrics, training seconds so far (evaluations excluded)
        self.eval_seconds = 0.0
        self.data_seconds = 0.0  # inside next(train iterator) and host-to-device batch assembly, training only
        self.step_flops = 0.0
        self.saves: list[tuple[float, float]] = []  # (perf_counter) start and end of each checkpoint save call
        self.stop_when, self.synthetic, self.in_eval = stop_when, synthetic, False
        self._install()

    def _install(self) -> None:
        probe = self
        real_evaluate, real_flops = training.evaluate, flops.step_flops
        real_batches, real_global = data_lib.train_batches, sharding.global_batch
        real_save = training.Checkpoints.save

        def evaluate(run, eval_step, state, source):
            start = time.perf_counter()
            train_seconds = start - common.PROCESS_START - probe.eval_seconds  # evaluations so far left out
            probe.in_eval = True
            try:
                metrics = real_evaluate(run, eval_step, state, source)
            finally:
                probe.in_eval = False
                probe.eval_seconds += time.perf_counter() - start
            end = time.perf_counter()
            probe.evals.append({"step": int(state.step), "train_seconds": train_seconds, "start": start, "end": end})
            probe.evals[-1].update(metrics)
            if probe.stop_when is not None and probe.stop_when(metrics):
                raise TargetReached
            return metrics

        def step_flops(compiled, mesh):
            probe.step_flops = real_flops(compiled, mesh)
            return probe.step_flops

        class TimedBatches:
            def __init__(self, iterator):
                self.iterator, self.fixed = iterator, None

            def __next__(self):
                start = time.perf_counter()
                if not probe.synthetic:
                    batch = next(self.iterator)
                else:  # one real batch, read once and then served from memory
                    self.fixed = self.fixed if self.fixed is not None else next(self.iterator)
                    batch = self.fixed
                probe.data_seconds += time.perf_counter() - start
                return batch

            def get_state(self):
                return self.iterator.get_state()

            def set_state(self, state):
                self.iterator.set_state(state)

        cache = {}

        def global_batch(local_batch, mesh):
            if probe.in_eval:
                return real_global(local_batch, mesh)
            start = time.perf_counter()
            if probe.synthetic:  # the same arrays on the device every step: no transfer at all
                if "batch" not in cache:
                    cache["batch"] = jax.device_put(real_global(local_batch, mesh), sharding.batch_sharding(mesh))
                batch = cache["batch"]
            else:
                batch = real_global(local_batch, mesh)
            probe.data_seconds += time.perf_counter() - start
            return batch

        def save(checkpoints, *args, **kwargs):
            start = time.perf_counter()
            real_save(checkpoints, *args, **kwargs)
            probe.saves.append((start, time.perf_counter()))

        class StampingReporter(reporting.Reporter):
            def write(self, step, split, metrics):
                if split == "train":
                    probe.train_stamps.append((step, time.perf_counter(), probe.data_seconds))
                    probe.main_cpu_stamps.append((step, time.thread_time()))  # the loop writes from the main thread
                super().write(step, split, metrics)

        wrappers = [
            (training, "evaluate", evaluate),
            (flops, "step_flops", step_flops),
            (data_lib, "train_batches", lambda *a, **k: TimedBatches(real_batches(*a, **k))),
            (sharding, "global_batch", global_batch),
            (training, "Reporter", StampingReporter),
            (training.Checkpoints, "save", save),
        ]
        self._originals = [(owner, name, getattr(owner, name)) for owner, name, _ in wrappers]
        for owner, name, wrapper in wrappers:
            setattr(owner, name, wrapper)

    def train(self, config, workdir: Path) -> bool:
        """Run jaxdl.train; True when the run stopped early at its target. The loop's functions are jaxdl's own
        again afterwards, so a later probe in the same process wraps them, not this one's wrappers."""
        logging.set_verbosity(logging.WARNING)  # as jaxdl.main does
        try:
            jaxdl.train(config, workdir)
            return False
        except TargetReached:
            return True
        finally:
            for owner, name, original in self._originals:
                setattr(owner, name, original)
