"""The one training loop: every experiment runs through `train_and_evaluate(config, workdir)`."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from jaxdl import config as config_lib
from jaxdl import data as data_lib
from jaxdl import optim, sharding
from jaxdl.checkpoint import Checkpoints
from jaxdl.errors import UsageError
from jaxdl.reporting import Reporter
from jaxdl.state import TrainState


def check_workdir(workdir: Path) -> None:
    """Fail early, before anything is written, on a workdir that cannot hold a run."""
    existing = next((p for p in (workdir, *workdir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"--workdir={workdir}: {existing} is a file, not a directory; choose another --workdir")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--workdir={workdir}: {existing} is not writable; choose another --workdir")


def write_config(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """workdir/config.json, replaced atomically so a crash never leaves half a file."""
    if jax.process_index() == 0:
        tmp = workdir / "config.json.tmp"
        tmp.write_text(config.to_json(indent=2, sort_keys=True) + "\n")
        tmp.replace(workdir / "config.json")


def evaluate(eval_step, state, dataset, source, config, mesh) -> dict:
    """Totals of the task's eval sums over every example of `source`, kept on device until the end."""
    totals = None
    for local_batch in data_lib.eval_batches(
        dataset, source, config.data.eval_batch_size, jax.process_index(), jax.process_count()
    ):
        sums = eval_step(state, sharding.global_batch(local_batch, mesh))
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    return jax.device_get(totals)


def mean_metrics(pending: list[dict]) -> dict[str, float]:
    """Average the per-step train metrics of one log interval (fetched from the device in one go)."""
    fetched = jax.device_get(pending)
    return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Train `config.experiment` in `workdir`, resuming from its latest checkpoint; return the test metrics."""
    started = time.time()
    workdir = Path(workdir)
    check_workdir(workdir)
    experiment = config_lib.build_experiment(config)
    model, task, dataset = experiment.model, experiment.task, experiment.data

    mesh = sharding.make_mesh(config.mesh)
    sharding.check_batch_size(config.data.batch_size, mesh)
    sharding.check_batch_size(config.data.eval_batch_size, mesh, name="data.eval_batch_size")
    train_source = data_lib.head(dataset.train, config.data.train_examples)
    test_source = data_lib.head(dataset.test, config.data.test_examples)
    validation_source = dataset.validation
    if config.data.validation_size:
        train_source, validation_source = data_lib.hold_out(train_source, config.data.validation_size, config.seed)
    eval_source = test_source if validation_source is None else validation_source
    steps_per_epoch = data_lib.steps_per_epoch(train_source, config.data.batch_size)
    if steps_per_epoch == 0:
        raise UsageError(f"--config.data.batch_size={config.data.batch_size} exceeds the {len(train_source)} examples")
    total_steps = config.train.max_steps or config.train.num_epochs * steps_per_epoch
    eval_every = config.train.eval_every_steps or steps_per_epoch
    checkpoint_every = config.checkpoint.every_steps or steps_per_epoch
    tx = optim.build_optimizer(config.optim, total_steps)
    learning_rate = optim.learning_rate_schedule(config.optim, total_steps)

    # The state's shapes come from one example; its layout on the mesh from the sharding rule.
    init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
    example = dataset.preprocess(train_source.take(np.arange(1)))
    init_state = lambda rng: TrainState.create(task.init(model, rng, example), tx)
    state_sharding = sharding.state_sharding(mesh, jax.eval_shape(init_state, init_rng))
    batch_sharding, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    train_step = jax.jit(
        functools.partial(task.train_step, model, tx),
        in_shardings=(state_sharding, batch_sharding, replicated),
        out_shardings=(state_sharding, replicated),
        donate_argnums=0,  # the old state's buffers are reused for the new one
    )
    eval_step = jax.jit(
        functools.partial(task.eval_step, model),
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=replicated,
    )

    train_batches = data_lib.train_batches(
        dataset, train_source, config.data.batch_size, config.seed, jax.process_index(), jax.process_count()
    )
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(workdir / "checkpoints", config.checkpoint.keep)
    resume_step = checkpoints.latest_step()
    if resume_step is None:
        state = jax.jit(init_state, out_shardings=state_sharding)(init_rng)
    else:
        abstract_state = jax.tree.map(
            lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
            jax.eval_shape(init_state, init_rng),
            state_sharding,
        )
        state, position = checkpoints.restore(abstract_state, resume_step)
        train_batches.set_state(position)
    write_config(config, workdir)

    step = int(jax.device_get(state.step))
    reporter = Reporter(workdir, total_steps, step)
    reporter.print(
        f"{config.experiment}: {len(train_source)} train, "
        f"{len(validation_source) if validation_source is not None else 0} validation, {len(test_source)} test "
        f"examples; {mesh.size} device(s) {dict(mesh.shape)} ({jax.devices()[0].platform}); "
        f"{'resuming at step ' + str(step) if resume_step is not None else 'from scratch'}; workdir {workdir}"
    )
    pending, interval_start = [], time.perf_counter()
    while step < total_steps:
        batch = sharding.global_batch(next(train_batches), mesh)
        state, metrics = train_step(state, batch, step_rng)
        step += 1
        pending.append(metrics)
        reporter.advance()
        if step % config.train.log_every_steps == 0 or step == total_steps:
            summary = mean_metrics(pending)  # the one host sync of the interval
            elapsed = time.perf_counter() - interval_start
            summary["learning_rate"] = float(learning_rate(step - 1))
            summary["steps_per_sec"] = len(pending) / elapsed
            summary["examples_per_sec"] = len(pending) * config.data.batch_size / elapsed
            reporter.write(step, "train", summary)
            pending, interval_start = [], time.perf_counter()
        if step % checkpoint_every == 0 or step == total_steps:
            checkpoints.save(state, train_batches.get_state())
        # Without a validation split the periodic evaluation looks at the test split, so the final one is skipped:
        # the "test" line below is that evaluation.
        if step % eval_every == 0 and (step != total_steps or validation_source is not None):
            sums = evaluate(eval_step, state, dataset, eval_source, config, mesh)
            reporter.write(step, "eval", task.summarize(sums))

    test = task.summarize(evaluate(eval_step, state, dataset, test_source, config, mesh))
    reporter.write(step, "test", test)
    checkpoints.close()
    wall = time.time() - started
    reporter.print(
        f"{config.experiment} done at step {step}: test "
        + ", ".join(f"{k} {v:.4f}" for k, v in test.items() if isinstance(v, float))
        + f"; wall time {wall:.1f} s; workdir {workdir}"
    )
    reporter.close()
    return test
