"""Where arrays live: the device mesh, the one rule that places the train state, and global batches.

The mesh has two axes, `data` and `fsdp`. The batch is split over both. The train state (parameters and optimizer
moments alike) is either replicated or, with `mesh.fsdp > 1`, FSDP-sharded: every array of at least
`mesh.fsdp_min_size` elements is split along its largest dimension that `fsdp` divides; smaller ones are replicated.
`jax.jit` with these shardings inserts the collectives (all-gathers of sharded weights, reduce-scatters of their
gradients, all-reduces of replicated ones), so one compiled step serves every strategy, on CPU, GPU or TPU, in one
process or many.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
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
