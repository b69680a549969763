"""Where arrays live: the device mesh, the rule that places the train state, and global batches.

The batch is split along the `data` mesh axis; the train state is replicated. `jax.jit` with these shardings
does the rest (gradient all-reduce included), on CPU, GPU or TPU, in one process or many.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxdl.errors import UsageError

DATA_AXIS = "data"


def make_mesh(mesh_config: ml_collections.ConfigDict) -> Mesh:
    """A 1-axis mesh over `mesh.data` devices (-1 = all devices of all processes)."""
    devices = jax.devices()
    size = len(devices) if mesh_config.data == -1 else mesh_config.data
    if size != len(devices):
        raise UsageError(
            f"--config.mesh.data={mesh_config.data} does not match the {len(devices)} devices available; "
            "use -1 for all of them"
        )
    # Auto axes: XLA propagates shardings through the model, so models need no sharding annotations of their own.
    return jax.make_mesh((size,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def state_sharding(mesh: Mesh, state: Any) -> Any:
    """The sharding of every leaf of the train state: replicated on every device."""
    return jax.tree.map(lambda _: replicated(mesh), state)


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "data.batch_size") -> None:
    """A global batch must split evenly over the data axis and over the processes that feed it."""
    for count, what in ((mesh.shape[DATA_AXIS], "devices on the data axis"), (jax.process_count(), "processes")):
        if batch_size % count:
            raise UsageError(f"--config.{name}={batch_size} is not divisible by the {count} {what}")


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """One global array per field from this process's rows (every process passes its own, same-sized part)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
