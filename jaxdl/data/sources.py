"""Random-access sources: what an experiment's data piece hands to the pipeline.

A source is anything with `__len__` and `take(indices) -> dict of numpy arrays`, one row per index. Taking
whole batches at once (a numpy gather) instead of one example at a time keeps the input pipeline cheap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

Batch = dict[str, np.ndarray]


class Source(Protocol):
    def __len__(self) -> int: ...

    def take(self, indices: np.ndarray) -> Batch: ...


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """Examples held in memory as equally long numpy arrays, e.g. {"inputs": images, "targets": labels}."""

    arrays: Batch

    def __post_init__(self):
        lengths = {len(a) for a in self.arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"arrays of different lengths: { {k: len(a) for k, a in self.arrays.items()} }")

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def take(self, indices: np.ndarray) -> Batch:
        return {k: a[indices] for k, a in self.arrays.items()}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """An experiment's data: the splits and the per-batch numpy transforms applied on the way in.

    `preprocess(batch)` (numpy) runs on every split as batches are read, e.g. uint8 pixels to floats.
    `augment(batch, rng)` (jax) runs on training batches inside the compiled train step, on the device, with a key
    derived from (seed, step): a resumed run sees the same images, and since jax's random numbers do not depend on
    how an array is sharded, so does a run on any number of devices or processes.
    """

    train: Source
    test: Source
    validation: Source | None = None
    preprocess: Callable[[Batch], Batch] = lambda batch: batch
    augment: Callable[[dict, Any], dict] | None = None
    metadata: dict = dataclasses.field(default_factory=dict)  # JSON saved with every checkpoint, e.g. a vocabulary
    # Metrics of a reference model (e.g. a linear baseline) on the test split, reported beside the run's own.
    reference: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Head:
    """The first `size` examples of a source."""

    source: Source
    size: int

    def __len__(self) -> int:
        return min(self.size, len(self.source))

    def take(self, indices: np.ndarray) -> Batch:
        return self.source.take(indices)


def head(source: Source, size: int) -> Source:
    """The first `size` examples of `source`; all of it when size is 0."""
    return Head(source, size) if size else source


def select_classes(source: ArraySource, classes: Sequence[int], per_class: int = 0, seed: int = 0) -> ArraySource:
    """The examples whose "targets" is one of `classes`, relabelled 0..len(classes)-1 in that order; with
    `per_class`, only that many of each class (a seeded random choice, kept in the source's order)."""
    targets = source.arrays["targets"]
    keep = np.isin(targets, classes)
    if per_class:
        rng = np.random.default_rng(seed)
        keep = np.zeros(len(targets), bool)
        for c in classes:
            members = np.flatnonzero(targets == c)
            keep[rng.choice(members, min(per_class, len(members)), replace=False)] = True
    chosen = source.take(np.flatnonzero(keep))
    relabel = np.full(int(targets.max()) + 1, -1, np.int32)
    relabel[list(classes)] = np.arange(len(classes))
    return ArraySource({**chosen, "targets": relabel[chosen["targets"]]})


def hold_out(source: ArraySource, size: int, seed: int) -> tuple[ArraySource, ArraySource]:
    """Split a seeded random `size` examples off `source`: (rest, held_out)."""
    if not 0 < size < len(source):
        raise ValueError(f"validation_size={size} must be between 1 and {len(source) - 1}")
    order = np.random.default_rng(seed).permutation(len(source))
    return ArraySource(source.take(np.sort(order[size:]))), ArraySource(source.take(np.sort(order[:size])))
