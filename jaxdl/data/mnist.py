"""MNIST from the four standard IDX files in $JAXDL_DATA_DIR/mnist, else from tensorflow-datasets."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from jaxdl.data.sources import ArraySource
from jaxdl.errors import UsageError

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (gzipped or not): magic 0x0000 <dtype=0x08 uint8> <ndim>, big-endian int32 sizes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UsageError(f"{path}: not an IDX file of unsigned bytes (bad magic number); re-download it")
    ndim = data[3]
    shape = tuple(int(n) for n in np.frombuffer(data, ">i4", count=ndim, offset=4))
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(data) != expected:
        raise UsageError(f"{path}: {len(data)} bytes where its header promises {expected}; the file is damaged")
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _from_idx(directory: Path, split: str) -> ArraySource:
    images_file, labels_file = (directory / name for name in FILES[split])
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UsageError(f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match")
    return ArraySource({"inputs": images[..., None], "targets": labels.astype(np.int32)})


def _from_tfds(split: str) -> ArraySource:
    import tensorflow_datasets as tfds  # only on this path: it is a heavy import
    from absl import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # tfds warns about every folder it looks into before failing
    try:
        source = tfds.data_source("mnist", split=split, download=False)
    finally:
        logging.set_verbosity(verbosity)
    examples = [source[i] for i in range(len(source))]
    images = np.stack([e["image"] for e in examples]).astype(np.uint8)
    return ArraySource({"inputs": images, "targets": np.array([e["label"] for e in examples], np.int32)})


def load(split: str) -> ArraySource:
    """The MNIST `split` ("train": 60,000 or "test": 10,000) as uint8 images (N, 28, 28, 1) and int32 labels."""
    directory = Path(os.environ.get("JAXDL_DATA_DIR", "data")) / "mnist"
    if all((directory / name).is_file() for name in FILES[split]):
        return _from_idx(directory, split)
    try:
        return _from_tfds(split)
    except Exception as e:  # tfds raises many kinds of errors for "not prepared"; all mean the same here
        raise UsageError(
            f"MNIST not found: no {' and '.join(FILES[split])} in {directory.resolve()} (set $JAXDL_DATA_DIR to the "
            f"folder holding mnist/) and tensorflow-datasets has no prepared copy ({type(e).__name__}); "
            "put the IDX files there or run `tfds build mnist --file_format=array_record`"
        ) from None


def to_float(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """uint8 pixels to float32 in [0, 1]."""
    return {**batch, "inputs": batch["inputs"].astype(np.float32) / 255.0}
