"""From a source to per-process batches: grain for training (a seeded permutation re-drawn every epoch, resumable
iterator), a plain padded-and-masked loop for evaluation (every example counted exactly once).

Every process computes the same global batch of *indices* and gathers only its own rows, so the global batch
is the same whatever the number of processes: a run on 2 hosts sees exactly the data of a run on 1.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator

import grain
import numpy as np

from jaxdl.data.sources import Batch, Dataset, Source


def _local_rows(global_batch_size: int, process_index: int, process_count: int) -> slice:
    local = global_batch_size // process_count
    return slice(process_index * local, (process_index + 1) * local)


def epoch_permutation(seed: int, epoch: int, size: int) -> np.ndarray:
    """The order of epoch `epoch`: a seeded permutation of range(size), the same on every process."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def train_batches(
    data: Dataset,
    source: Source,
    global_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
    prefetch: int = 4,
) -> grain.DatasetIterator:
    """An endless, resumable iterator of this process's rows of each global training batch.

    Epoch e is a fresh seeded permutation of the source. Batches are cut from the endless stream, so one may span
    two epochs and no example is ever dropped. `get_state()`/`set_state()` checkpoint the position.

    The stream is a grain dataset of *batches*: batch k slices positions [k*B, (k+1)*B) out of whole-epoch numpy
    permutations. Indexing grain's element-wise `shuffle()` cost 2.0 ms of CPU per 128-example mnist batch (15 us
    per lookup), ~10% of a train step, taken from the 2 cores XLA computes on (BUILD_NOTES, issue 8); this costs
    0.19 ms, most of it the gather. The price: 8 bytes of memory per example for each of the two cached epochs.

    `prefetch` batches are prepared ahead by a background thread; with 0, each batch is made inside `next()`.
    """
    rows = _local_rows(global_batch_size, process_index, process_count)
    size = len(source)
    permutation = functools.lru_cache(maxsize=2)(functools.partial(epoch_permutation, seed, size=size))

    def batch_at(k: int) -> Batch:
        positions = np.arange(k * global_batch_size, (k + 1) * global_batch_size)[rows]
        epochs, offsets = np.divmod(positions, size)
        indices = np.empty_like(positions)
        for epoch in np.unique(epochs):  # one epoch, or two when the batch straddles an epoch's end
            indices[epochs == epoch] = permutation(int(epoch))[offsets[epochs == epoch]]
        return data.preprocess(source.take(indices))

    dataset = grain.MapDataset.range(sys.maxsize).map(batch_at)
    # The step is dispatched asynchronously, so even without the thread the next batch is made while it computes.
    options = grain.ReadOptions(num_threads=1 if prefetch else 0, prefetch_buffer_size=prefetch)
    return iter(dataset.to_iter_dataset(options))


def eval_batches(
    data: Dataset, source: Source, global_batch_size: int, process_index: int, process_count: int
) -> Iterator[Batch]:
    """Every example once, in order; the last batch is padded (repeating the last example) and masked out."""
    rows = _local_rows(global_batch_size, process_index, process_count)
    n = len(source)
    for start in range(0, n, global_batch_size):
        indices = np.arange(start, start + global_batch_size)[rows]
        batch = data.preprocess(source.take(np.minimum(indices, n - 1)))
        batch["mask"] = indices < n
        yield batch


def steps_per_epoch(source: Source, global_batch_size: int) -> int:
    return len(source) // global_batch_size
