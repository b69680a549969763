"""Data: random-access sources (what experiments provide) and the pipeline that batches them."""

from jaxdl.data import mnist
from jaxdl.data.pipeline import eval_batches, steps_per_epoch, train_batches
from jaxdl.data.sources import ArraySource, Batch, Dataset, Source, head, hold_out

__all__ = [
    "ArraySource",
    "Batch",
    "Dataset",
    "Source",
    "eval_batches",
    "head",
    "hold_out",
    "mnist",
    "steps_per_epoch",
    "train_batches",
]
