"""Where arrays live: the device mesh, the one rule that places the train state, and global batches; and how many
calls may run ahead of the host.

The mesh has two axes, `data` and `fsdp`. The batch is split over both. The train state (parameters and optimizer
moments alike) is either replicated or, with `mesh.fsdp > 1`, FSDP-sharded: every array of at least
`mesh.fsdp_min_size` elements is split along its largest dimension that `fsdp` divides; smaller ones are replicated.
`jax.jit` with these shardings inserts the collectives (all-gathers of sharded weights, reduce-scatters of their
gradients, all-reduces of replicated ones), so one compiled step serves every strategy, on CPU, GPU or TPU, in one
process or many. One exception, for speed: a data-parallel step on CPU devices runs per device and sums all the
gradients as one flat array (`per_device_step`), where that gives the same numbers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.flatten_util import ravel_pytree
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxdl.errors import UsageError

DATA_AXIS, FSDP_AXIS = "data", "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # a batch is split over every device


def use_cpu_devices(count: int) -> None:
    """Split this process's CPU into `count` jax devices, which the mesh then trains data-parallel; 0 leaves jax's
    default (one CPU device computing with every core).

    Why: on a 2-core CPU two such devices ran shakespeare_gpt_reference's steps 1.24-1.72x as fast as one: each
    device's program leaves cores idle between its many small ops, and two programs in flight fill them. Models
    whose ops are few and large (mnist_cnn, 0.9x) or tiny (mnist_mlp, 0.5x) lose (BUILD_NOTES.md, issue 8), hence a
    per-experiment setting. The devices share the process's cores, so a CPU's MFU peak is per process
    (`jaxdl.flops.peak_count`). GPU and TPU meshes are made of their own devices: this changes nothing there.

    It takes effect only before jax starts its backends (the command line calls it first). A device count given in
    XLA_FLAGS (--xla_force_host_platform_device_count, e.g. fake devices in tests) wins; a process in which jax
    already runs with another count keeps it, with a warning.
    """
    if count < 0:
        raise UsageError(f"--config.mesh.cpu_devices={count}: give a device count, or 0 for jax's default")
    if count == 0 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # the backends have started (an earlier run in this process, a notebook)
        running = len(jax.local_devices(backend="cpu"))
        if running != count:
            logging.warning("mesh.cpu_devices=%d not applied: jax already runs with %d CPU device(s)", count, running)


def make_mesh(mesh_config: ml_collections.ConfigDict) -> Mesh:
    """A (data, fsdp) mesh over all devices of all processes; one axis size may be -1 (= what the other leaves)."""
    count = jax.device_count()
    sizes = [mesh_config.data, mesh_config.fsdp]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise UsageError(f"--config.mesh.data={sizes[0]} fsdp={sizes[1]}: give device counts, at most one of them -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if count % known:
        raise UsageError(f"mesh data={sizes[0]} x fsdp={sizes[1]} does not divide the {count} devices available")
    sizes = [count // known if s == -1 else s for s in sizes]
    if sizes[0] * sizes[1] != count:
        raise UsageError(
            f"mesh data={sizes[0]} x fsdp={sizes[1]} uses {sizes[0] * sizes[1]} devices, but {count} are available; "
            "set one axis to -1 to use them all"
        )
    # Auto axes: XLA propagates shardings through the model, so models need no sharding annotations of their own.
    return jax.make_mesh(tuple(sizes), (DATA_AXIS, FSDP_AXIS), axis_types=(AxisType.Auto,) * 2)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int) -> PartitionSpec:
    """The sharding rule for one array of the train state: split its largest dimension that the fsdp axis divides,
    if it has at least `min_size` elements; otherwise replicate it."""
    if fsdp_size == 1 or int(np.prod(shape)) < min_size:
        return PartitionSpec()
    divisible = [d for d in range(len(shape)) if shape[d] % fsdp_size == 0]
    if not divisible:
        return PartitionSpec()
    dim = max(divisible, key=lambda d: shape[d])  # the largest dimension: the most even split
    return PartitionSpec(*[FSDP_AXIS if d == dim else None for d in range(len(shape))])


def state_sharding(mesh: Mesh, abstract_state: Any, fsdp_min_size: int = 2**14) -> Any:
    """The sharding of every leaf of the train state (parameters and optimizer state alike), from its shape."""
    fsdp_size = mesh.shape[FSDP_AXIS]
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(x.shape, fsdp_size, fsdp_min_size)), abstract_state)


def per_device_step_applies(mesh: Mesh, state_shapes: Any, tx: Any, grad_norm: bool) -> bool:
    """Whether the train step runs per device (`per_device_step`) instead of as one program that XLA partitions.

    Why: XLA:CPU runs an all-reduce of many arrays (the gradients, one per parameter) as one rendezvous of the
    devices' threads per array. On a 2-core CPU that took ~6.5 ms of the reference GPT's ~35 ms step on two devices;
    the same bytes as one flat array took 1.6 ms (BUILD_NOTES.md, issue 8). The per-device step computes the same
    update only where each example's loss ignores the others' and the optimizer sees the gradients whole: so not
    with batch statistics (model state), FSDP, the gradient norm reported (it would be one device's) or a task's own
    per-network optimizer (the GAN's). Elsewhere, and on GPU and TPU, XLA's partitioned program stays.
    Cost: the reference GPT's per-device step compiles in 2.6 s against 1.9-2.0 s (a kernel to copy out each array's
    gradient), start-up that a run's compilation cache saves after the first run.
    """
    return (
        mesh.shape[DATA_AXIS] > 1
        and mesh.shape[FSDP_AXIS] == 1
        and mesh.devices.flat[0].platform == "cpu"
        and not jax.tree.leaves(state_shapes.model_state)
        and isinstance(tx, optax.GradientTransformation)
        and not grad_norm
    )


def mean_gradients_first(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """`tx`, its gradients first averaged over the batch's devices as one flat array, in one all-reduce (for
    `per_device_step`). The optimizer state is `tx`'s own, so checkpoints do not depend on the step's layout."""

    def update(grads, opt_state, params=None, **extra_args):
        flat, unflatten = ravel_pytree(grads)
        summed = jax.lax.psum(flat, BATCH_AXES)
        # Split inside a conditional, whose predicate is always true but known only at run time, so that XLA gives
        # every gradient a buffer of its own. Fused straight into the optimizer's updates, the slices of the one
        # buffer made each array's update a kernel of its own, where same-shaped arrays otherwise share one: the
        # reference GPT's step compiled in 4.4 s instead of 2.6 s (BUILD_NOTES.md, issue 8). Not an optimization
        # barrier: XLA:CPU removes those before it fuses.
        split_alone = jax.lax.axis_index(BATCH_AXES) >= 0
        sums = jax.lax.cond(split_alone, unflatten, unflatten, summed)
        # Divided after the split, not before: XLA fuses the division into each array's update, and there a division
        # of the whole flat array made its cost analysis count the step's FLOPs 11% high (the MFU numerator).
        devices = jax.lax.psum(1, BATCH_AXES)
        return tx.update(jax.tree.map(lambda g: g / devices, sums), opt_state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(tx.init, update)


def per_device_step(task_step: Callable, mesh: Mesh) -> Callable:
    """A task's `train_step(model, tx, state, batch, rng, ...)` run on each device's part of the batch (shard_map),
    the state replicated and the gradients averaged by `mean_gradients_first`, so every device applies the same
    update. Where `per_device_step_applies`, it gives the partitioned step's numbers up to the order of sums, except
    that each device draws its own dropout masks (augmentation happens before, on the whole batch)."""

    def step(model, tx, state, batch, rng, **options):
        def on_each_device(state, batch, rng):
            rng = jax.random.fold_in(rng, jax.lax.axis_index(BATCH_AXES))  # without it, every device's masks alike
            state, metrics = task_step(model, mean_gradients_first(tx), state, batch, rng, **options)
            return state, jax.lax.pmean(metrics, BATCH_AXES)  # the tasks' train metrics are means over the examples

        spec = PartitionSpec()
        # check_vma=False: with it, jax would sum each parameter's gradient over the devices by itself (the
        # transpose of using replicated parameters on split data), one all-reduce per array again.
        in_specs = (spec, PartitionSpec(BATCH_AXES), spec)
        run = jax.shard_map(on_each_device, mesh=mesh, in_specs=in_specs, out_specs=spec, check_vma=False)
        return run(state, batch, rng)

    return step


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "data.batch_size") -> None:
    """A global batch must split evenly over the devices and over the processes that feed it."""
    for count, what in ((mesh.size, "devices of the mesh"), (jax.process_count(), "processes")):
        if batch_size % count:
            raise UsageError(f"--config.{name}={batch_size} is not divisible by the {count} {what}")


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, np.ndarray | jax.Array]:
    """The batch for a step compiled with `batch_sharding(mesh)` as its input sharding, from this process's rows
    (every process passes its own, same-sized part): one global array per field.

    With one process the rows are the whole batch, and the numpy arrays go to the step as they are: the compiled
    call places them by its input shardings in C++, where `jax.device_put` cost 0.30-0.39 ms of the main thread's
    time per mnist_cnn batch, time that XLA's compute threads lose on a 2-core CPU (BUILD_NOTES.md, issue 8)."""
    if jax.process_count() == 1:
        return local_batch
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


# XLA:CPU admits 32 calls of a program in flight per device, and a call on several devices takes its slot on each
# device from inside XLA's small pool of execution threads, the pool that runs the calls it waits for. So the 33rd
# call in flight can leave every pool thread waiting for a slot: the process hangs in a collective's rendezvous and
# aborts after 40 s (jaxlib 0.10.2: `PjRtCpuLoadedExecutable::Execute` in xla/pjrt/cpu/cpu_client.cc). A 2-device
# GPT run logging every 400 steps died so (BUILD_NOTES.md, issue 8). The training loop and the evaluation each let at
# most this many calls run ahead of the host, together well below 32; on GPU and TPU it is still ample look-ahead.
MAX_CALLS_IN_FLIGHT = 8


def limit_calls_in_flight(outputs: list) -> None:
    """Wait until at most MAX_CALLS_IN_FLIGHT of the calls that gave `outputs` (one entry per call, oldest first) are
    still running. A device runs its calls in order, so waiting for one call's outputs waits for all before it.
    With one device there is no collective to hang, and the calls run ahead unlimited, as they always did."""
    if len(outputs) > MAX_CALLS_IN_FLIGHT and jax.local_device_count() > 1:
        jax.block_until_ready(outputs[-MAX_CALLS_IN_FLIGHT - 1])


def collect_limited(calls: Iterable[Any]) -> list[Any]:
    """The outputs of `calls`, a generator that makes one call per item, with `limit_calls_in_flight` after each."""
    outputs = []
    for output in calls:
        outputs.append(output)
        limit_calls_in_flight(outputs)
    return outputs


def initialize_processes(
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    auto: bool,
    heartbeat_timeout_seconds: int,
) -> None:
    """Join a multi-process (multi-host) run before any computation; a no-op for a single process.

    Either every process names the coordinator (process 0's host:port), the process count and its own id, or `auto`
    lets `jax.distributed.initialize()` read them from the cluster (TPU pods, SLURM, Open MPI). A process whose peer
    dies stops with an error once the peer has missed heartbeats for `heartbeat_timeout_seconds`, instead of hanging.
    """
    explicit = (coordinator_address, num_processes, process_id)
    if auto and any(v is not None for v in explicit):
        raise UsageError(
            "--distributed auto-detects the processes: drop --coordinator_address/--num_processes/--process_id"
        )
    if any(v is not None for v in explicit) and None in explicit:
        raise UsageError("--coordinator_address, --num_processes and --process_id go together: give all three")
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise UsageError(f"--process_id={process_id} must be between 0 and --num_processes={num_processes} - 1")
    if auto:
        jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_seconds)
    elif coordinator_address is not None:
        jax.distributed.initialize(
            coordinator_address,
            num_processes,
            process_id,
            initialization_timeout=heartbeat_timeout_seconds,
            heartbeat_timeout_seconds=heartbeat_timeout_seconds,
        )
