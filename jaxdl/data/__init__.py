"""Data: random-access sources (what experiments provide) and the pipeline that batches them."""

from jaxdl.data import mnist, tabular
from jaxdl.data.pipeline import epoch_permutation, eval_batches, steps_per_epoch, train_batches
from jaxdl.data.sources import ArraySource, Batch, Dataset, Source, head, hold_out, select_classes

__all__ = [
    "ArraySource",
    "Batch",
    "Dataset",
    "Source",
    "epoch_permutation",
    "eval_batches",
    "head",
    "hold_out",
    "mnist",
    "select_classes",
    "steps_per_epoch",
    "tabular",
    "train_batches",
]
