"""The one training loop: every experiment runs through `train_and_evaluate(config, workdir)`."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from jaxdl import compiler, finetune, flops, images, memory, optim, plot, profiling, sharding
from jaxdl import config as config_lib
from jaxdl import data as data_lib
from jaxdl.checkpoint import Checkpoints
from jaxdl.early_stopping import Monitor
from jaxdl.errors import TrainingFailed, UsageError
from jaxdl.lora import LoRA
from jaxdl.preemption import StopRequest
from jaxdl.reporting import Reporter
from jaxdl.state import TrainState
from jaxdl.summary import model_summary


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a run derives from its config before the first step; shared by training and inference."""

    config: ml_collections.ConfigDict
    experiment: config_lib.Experiment
    mesh: Mesh
    train_source: data_lib.Source
    eval_source: data_lib.Source  # the validation split, or the test split when there is none
    test_source: data_lib.Source
    steps_per_epoch: int
    total_steps: int
    trainable: tuple[str, ...]  # path globs of the parameters that train; () = all
    tx: optax.GradientTransformation
    init_state: Callable[[jax.Array], TrainState]  # rng -> a fresh state
    state_shapes: Any  # jax.eval_shape of init_state: shapes and dtypes, nothing computed
    state_sharding: Any  # the sharding rule applied to the state's tree

    def abstract_state(self) -> Any:
        """Shapes, dtypes and shardings of the state, without computing it: what a restore fills in."""
        return jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), self.state_shapes, self.state_sharding
        )


def setup(config: ml_collections.ConfigDict) -> Setup:
    """Build the experiment and derive the mesh, data splits, step counts and state layout; checks all inputs."""
    sharding.use_cpu_devices(config.mesh.get("cpu_devices", 0))  # first: only before jax starts does it apply
    experiment = config_lib.build_experiment(config)
    trainable = tuple(config.optim.trainable)
    if config.lora.rank:  # the same model with adapters on its kernels; the adapters train, plus optim.trainable
        model = LoRA(experiment.model, config.lora.rank, config.lora.alpha, tuple(config.lora.targets))
        experiment, trainable = dataclasses.replace(experiment, model=model), ("lora/*",)
        trainable += tuple(f"base/{pattern}" for pattern in config.optim.trainable)  # e.g. a fresh head
    mesh = sharding.make_mesh(config.mesh)
    memory.keep_freed_memory(mesh)  # on CPU, each step's buffers reused instead of faulted in again
    sharding.check_batch_size(config.data.batch_size, mesh)
    sharding.check_batch_size(config.data.eval_batch_size, mesh, name="data.eval_batch_size")
    dataset = experiment.data
    train_source = data_lib.head(dataset.train, config.data.train_examples)
    test_source = data_lib.head(dataset.test, config.data.test_examples)
    validation_source = dataset.validation
    if config.data.validation_size:
        train_source, validation_source = data_lib.hold_out(train_source, config.data.validation_size, config.seed)
    steps_per_epoch = data_lib.steps_per_epoch(train_source, config.data.batch_size)
    if steps_per_epoch == 0:
        raise UsageError(f"--config.data.batch_size={config.data.batch_size} exceeds the {len(train_source)} examples")
    total_steps = config.train.max_steps or config.train.num_epochs * steps_per_epoch
    # A task may build its own optimizer from config.optim (e.g. one per network of a GAN: jaxdl.network_optimizers).
    tx = getattr(experiment.task, "optimizer", optim.build_optimizer)(config.optim, total_steps, trainable)
    if config.train.skip_nonfinite:  # updates from NaN/Inf gradients are dropped (and counted), up to 100 in a row
        tx = optax.apply_if_finite(tx, max_consecutive_errors=100)
    # The state's shapes come from one example; its layout on the mesh from the sharding rule.
    example = dataset.preprocess(train_source.take(np.arange(1)))
    average = config.optim.ema_decay > 0
    init_state = lambda rng: TrainState.create(experiment.task.init(experiment.model, rng, example), tx, average)
    shapes = jax.eval_shape(init_state, jax.random.key(0))
    state_sharding = sharding.state_sharding(mesh, shapes, config.mesh.fsdp_min_size)
    return Setup(
        config=config,
        experiment=experiment,
        mesh=mesh,
        train_source=train_source,
        eval_source=test_source if validation_source is None else validation_source,
        test_source=test_source,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        trainable=trainable,
        tx=tx,
        init_state=init_state,
        state_shapes=shapes,
        state_sharding=state_sharding,
    )


def initial_state(run: Setup, rng: jax.Array) -> TrainState:
    """A fresh state, laid out by the sharding rule; compiled with `compiler.once_options`, as it runs once."""
    init = jax.jit(run.init_state, out_shardings=run.state_sharding).lower(rng)
    return init.compile(compiler_options=compiler.once_options(run.mesh))(rng)


def compile_train_step(run: Setup, batch: dict, rng: jax.Array) -> jax.stages.Compiled:
    """The train step, compiled ahead of time for `batch`'s shapes: XLA's cost analysis then gives its FLOPs."""
    task, data, model = run.experiment.task, run.experiment.data, run.experiment.model
    replicated = sharding.replicated(run.mesh)
    task_step = functools.partial(task.train_step, grad_norm=run.config.train.grad_norm)
    if sharding.per_device_step_applies(run.mesh, run.state_shapes, run.tx, run.config.train.grad_norm):
        task_step = sharding.per_device_step(task_step, run.mesh)  # one all-reduce for all the gradients
    ema_decay = run.config.optim.ema_decay
    step = jax.jit(
        functools.partial(augmented_train_step, task_step, data.augment, ema_decay, model, run.tx),
        in_shardings=(run.state_sharding, sharding.batch_sharding(run.mesh), replicated),
        out_shardings=(run.state_sharding, replicated),
        donate_argnums=0,  # the old state's buffers are reused for the new one
    )
    return step.lower(run.abstract_state(), batch, rng).compile(compiler_options=compiler.options(run.mesh))


def compile_eval_step(run: Setup) -> Callable:
    task, model = run.experiment.task, run.experiment.model
    in_shardings = (run.state_sharding, sharding.batch_sharding(run.mesh))
    replicated = sharding.replicated(run.mesh)  # every process can read the sums
    return jax.jit(
        functools.partial(task.eval_step, model),
        in_shardings=in_shardings,
        out_shardings=replicated,
        compiler_options=compiler.options(run.mesh),
    )


def evaluate(run: Setup, eval_step: Callable, state: TrainState, source: data_lib.Source) -> dict[str, float]:
    """The task's metrics over every example of `source`. Each batch's sums stay on device until the last batch is
    dispatched, then are added up on the host (on device, each metric's `+` was one more program to compile)."""
    batches = data_lib.eval_batches(
        run.experiment.data, source, run.config.data.eval_batch_size, jax.process_index(), jax.process_count()
    )
    sums = sharding.collect_limited(eval_step(state, sharding.global_batch(b, run.mesh)) for b in batches)
    totals = functools.reduce(lambda a, b: jax.tree.map(np.add, a, b), jax.device_get(sums))
    return run.experiment.task.summarize(totals)


def augmented_train_step(
    train_step: Callable, augment: Callable | None, ema_decay: float, model, tx, state, batch, rng
):
    """The task's step, on a batch first augmented on the device (when the data has an augmentation), then the
    parameters' moving average updated (when one is kept)."""
    if augment is not None:
        # A key of its own per step: fold_in(rng, step) is the task's dropout key, this one is folded twice.
        batch = augment(batch, jax.random.fold_in(jax.random.fold_in(rng, state.step), 1))
    state, metrics = train_step(model, tx, state, batch, rng)
    return state.update_average(ema_decay), metrics


def init_from_checkpoint(run: Setup, state: TrainState) -> TrainState:
    """A fresh state whose parameters (and e.g. batch statistics) come from `init.from`, with a new optimizer."""
    lora = isinstance(run.experiment.model, LoRA)
    variables = {"params": state.params["base"] if lora else state.params, **state.model_state}
    init = run.config.init
    merged, table = finetune.initialize_from(init["from"], variables, tuple(init.skip), sharding.replicated(run.mesh))
    params = {**state.params, "base": merged.pop("params")} if lora else merged.pop("params")
    if jax.process_index() == 0:
        print(table)
    average = run.config.optim.ema_decay > 0
    create = lambda params, model_state: TrainState.create({"params": params, **model_state}, run.tx, average)
    return jax.jit(create, out_shardings=run.state_sharding)(params, merged)


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


def check_finite_losses(fetched: list[dict], first_step: int) -> None:
    """TrainingFailed naming the first step of the interval whose loss is NaN or infinite."""
    for offset, metrics in enumerate(fetched):
        if not np.isfinite(metrics["loss"]):
            raise TrainingFailed(
                f"the loss is {float(metrics['loss'])} at step {first_step + offset}: training diverged. Lower "
                "--config.optim.learning_rate, set --config.optim.grad_clip_norm, or set "
                "--config.train.skip_nonfinite=True to skip such updates; the checkpoints written so far are intact"
            )


@jax.jit
def all_finite(state: TrainState) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | Path, profile_steps: str = ""
) -> dict[str, float]:
    """Train `config.experiment` in `workdir`, resuming from its latest checkpoint; return the test metrics.
    `profile_steps="N:M"` writes a jax.profiler trace of steps N..M to WORKDIR/profile (jaxdl.profiling)."""
    started = time.time()
    workdir = Path(workdir)
    check_workdir(workdir)
    profiler = profiling.StepProfiler(profile_steps, workdir)
    run = setup(config)
    early = Monitor(config, run, workdir)  # early stopping and the best checkpoint, when configured
    dataset = run.experiment.data
    mesh, total_steps = run.mesh, run.total_steps
    eval_every = config.train.eval_every_steps or run.steps_per_epoch
    checkpoint_every = config.checkpoint.every_steps or run.steps_per_epoch
    # Compiled: run eagerly, the schedule's dozen small ops took ~2 ms of host time at every log line.
    learning_rate = jax.jit(optim.learning_rate_schedule(config.optim, total_steps))
    init_rng, step_rng = jax.random.split(jax.random.key(config.seed))

    prefetch = config.data.prefetch
    if prefetch < 0:  # on CPU the host's cores are the device's: a prefetch thread competes with XLA's compute
        prefetch = 0 if mesh.devices.flat[0].platform == "cpu" else 4
    train_batches = data_lib.train_batches(
        dataset,
        run.train_source,
        config.data.batch_size,
        config.seed,
        jax.process_index(),
        jax.process_count(),
        prefetch,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(workdir / "checkpoints", config.checkpoint.keep)
    restored = checkpoints.restore_newest_readable(run.abstract_state())
    restored_state, position, resume_step = (None, None, None) if restored is None else restored
    early.resume(checkpoints, resume_step)
    if position:  # a checkpoint written by --mode=merge_lora has no data position
        train_batches.set_state(position)
    first_batch = sharding.global_batch(next(train_batches), mesh)
    # XLA compiles a program on one core: the train step and the finiteness check before saves (compiled now, not at
    # the first checkpoint in mid-training) compile in threads while the initialisation compiles and runs here. The
    # GPT's start-up compiles took 5.8 s instead of 7.4-7.9 s one after another on 2 cores (BUILD_NOTES.md, issue 8).
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        compiling_step = pool.submit(compile_train_step, run, first_batch, step_rng)
        check_options = compiler.once_options(mesh)
        compiling_check = pool.submit(lambda: all_finite.lower(run.abstract_state()).compile(check_options))
        state = restored_state
        if state is None:
            state = initial_state(run, init_rng)
            if config.init["from"]:
                state = init_from_checkpoint(run, state)
        train_step, state_is_finite = compiling_step.result(), compiling_check.result()
    write_config(config, workdir)
    eval_step = compile_eval_step(run)
    step_flops = flops.step_flops(train_step, mesh)
    peak_flops = (config.train.peak_flops or flops.peak_flops()) * flops.peak_count(mesh)
    tokens_per_example = int(np.prod(first_batch["targets"].shape[1:]))

    step = int(jax.device_get(state.step))
    reporter = Reporter(workdir, total_steps, step, run.steps_per_epoch)
    if reporter.active:  # layers, shapes, parameter counts and sizes (nn.tabulate: an abstract trace, no compile)
        reporter.print(model_summary(run, workdir))
    groups = optim.parameter_groups(state.params, run.trainable, ())
    trainable, total = finetune.parameter_counts(state.params, jax.tree.map(lambda g: g != "frozen", groups))
    start = "from scratch" if not config.init["from"] else f"initialised from {config.init['from']}"
    start = f"resuming at step {step}" if resume_step is not None else start
    reporter.print(
        f"{config.experiment}: {len(run.train_source)} train, {len(run.eval_source)} eval, {len(run.test_source)} "
        f"test examples; {trainable:,} of {total:,} parameters train; "
        f"{mesh.size} device(s) {dict(mesh.shape)} ({jax.devices()[0].platform}); "
        f"{start}; workdir {workdir}"
    )
    if dataset.reference:  # a reference model's test metrics, in the same metrics.jsonl for comparison
        reporter.write(step, "baseline", dataset.reference)
    write_images = images.task_image_writer(run, workdir, reporter)  # the task's images at each evaluation, if any
    pending, batch, warned_peak = [], first_batch, False
    interval_start, interval_seconds = time.perf_counter(), 0.0  # training time of the log interval, evals excluded
    stop = StopRequest()
    try:
        while step < total_steps and not early.stopped:
            if batch is None:
                batch = sharding.global_batch(next(train_batches), mesh)
            profiler.before(step + 1)
            state, metrics = train_step(state, batch, step_rng)
            step, batch = step + 1, None
            profiler.after(step, state)
            pending.append(metrics)
            sharding.limit_calls_in_flight(pending)  # the steps since the last log line; all before them are done
            reporter.advance()
            stopping = stop.requested(step)
            due_log = step % config.train.log_every_steps == 0 or step == total_steps
            due_save = step % checkpoint_every == 0 or step == total_steps or stopping
            if due_log or due_save:
                # The one host sync of the interval. Waiting for the last step first: fetching while it still
                # ran cost the main thread ~8 ms more CPU per fetch, taken from XLA's threads (BUILD_NOTES, #8).
                jax.block_until_ready(pending[-1])
                fetched = jax.device_get(pending)
                if not config.train.skip_nonfinite:
                    check_finite_losses(fetched, first_step=step - len(pending) + 1)
            if due_log:
                summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                steps_per_sec = len(pending) / (interval_seconds + time.perf_counter() - interval_start)
                summary["learning_rate"] = float(learning_rate(step - 1))
                summary["steps_per_sec"] = steps_per_sec
                summary["examples_per_sec"] = steps_per_sec * config.data.batch_size
                if tokens_per_example > 1:
                    summary["tokens_per_sec"] = summary["examples_per_sec"] * tokens_per_example
                if step_flops:
                    summary["mfu"] = step_flops * steps_per_sec / peak_flops
                    if summary["mfu"] > 1 and not warned_peak:  # once per run
                        reporter.print(flops.low_peak_warning(summary["mfu"], bool(config.train.peak_flops)))
                        warned_peak = True
                if config.train.skip_nonfinite:
                    summary["skipped_updates"] = int(jax.device_get(state.opt_state.total_notfinite))
                reporter.write(step, "train", summary)
                pending, interval_start, interval_seconds = [], time.perf_counter(), 0.0
            # Evaluated before saving: a checkpoint at step S includes the evaluation at S (early stopping's state).
            # Without a validation split the periodic evaluation looks at the test split, so the final one is
            # skipped: the "test" line below is that evaluation.
            if step % eval_every == 0 and (step != total_steps or run.eval_source is not run.test_source):
                interval_seconds += time.perf_counter() - interval_start  # throughput counts training only
                evaluation = evaluate(run, eval_step, state.evaluated(), run.eval_source)
                reporter.write(step, "eval", evaluation)
                early.update(step, evaluation, state, reporter.print)  # may save a new best or decide to stop
                write_images(state.evaluated(), step)
                interval_start = time.perf_counter()
            if due_save or early.stopped:
                if not state_is_finite(state):  # never write a checkpoint with NaN or Inf in it
                    raise TrainingFailed(
                        f"the train state holds NaN or Inf after step {step} (the loss was finite): lower "
                        "--config.optim.learning_rate or set --config.optim.grad_clip_norm; earlier checkpoints "
                        "are intact"
                    )
                checkpoints.save(state, train_batches.get_state(), dataset.metadata, early.extras())
            if stopping:
                reporter.print(
                    f"stopped by SIGTERM after step {step}; checkpoint saved; rerun the same command to resume"
                )
                return {}

        state, best = early.final_state(state, run.abstract_state(), reporter.print)  # the best state, if kept
        state = state.evaluated()  # from here on only evaluated: the parameters' average, when kept
        test = {**evaluate(run, eval_step, state, run.test_source), **best}
        reporter.write(step, "test", test)
        write_images(state, step)
        plot.run_plots_safely(run, state, workdir, say=reporter.print)  # warns, never fails the run
        checkpoints.close()  # the last save is complete before the run says it is done
        reporter.print(
            f"{config.experiment} done at step {step}: test "
            + ", ".join(f"{k} {v:.4f}" for k, v in test.items() if isinstance(v, float))
            + f"; wall time {time.time() - started:.1f} s; workdir {workdir}"
        )
        return test
    finally:
        # On every way out, failures included: finish the saves under way (a checkpoint is never cut off by an
        # error elsewhere), and give SIGTERM back.
        checkpoints.close()
        profiler.stop()
        stop.release()
        reporter.close()
