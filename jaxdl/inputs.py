"""Files a user hands to a trained model (`--input=FILE`): an image (PNG, JPEG, anything Pillow reads) or a .npy
array, turned into examples exactly like the dataset's own: same shape and dtype, before the dataset's
`preprocess`, which the caller applies as in training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxdl.errors import UsageError


def read_examples(path: str | Path, example: np.ndarray) -> np.ndarray:
    """A batch of raw examples shaped and typed like `example` (one raw example with its batch axis, e.g. uint8
    (1, 28, 28, 1) for MNIST) from an image file or a .npy file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--input={path}: no such file; give a PNG/JPEG image or a .npy array of examples")
    if path.suffix.lower() == ".npy":
        return _from_npy(path, example)
    return _from_image(path, example)


def _from_image(path: Path, example: np.ndarray) -> np.ndarray:
    shape = example.shape[1:]
    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise UsageError(
            f"--input={path}: this model takes examples of shape {shape}, not images; give a .npy array of them"
        )
    try:
        with Image.open(path) as image:
            # Grayscale or RGB as the model was trained on; resized to its input size, like any resized photo.
            image = image.convert("L" if shape[-1] == 1 else "RGB").resize((shape[1], shape[0]), Image.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise UsageError(
            f"--input={path}: not an image Pillow can read ({type(e).__name__}); give a PNG/JPEG or a .npy array"
        ) from None
    pixels = pixels.reshape(1, *shape)
    if np.issubdtype(example.dtype, np.floating):  # a dataset of float images holds them in [0, 1]
        return (pixels / 255.0).astype(example.dtype)
    return pixels.astype(example.dtype)


def _from_npy(path: Path, example: np.ndarray) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)  # never unpickle a user's file: it could run code
    except (ValueError, OSError) as e:
        raise UsageError(f"--input={path}: not a readable .npy array ({' '.join(str(e).split())[:120]})") from None
    shape = example.shape[1:]
    if array.shape == shape:
        array = array[None]
    elif shape[-1:] == (1,) and array.shape[-len(shape) + 1 :] == shape[:-1]:  # channel axis left out
        array = array.reshape(-1, *shape) if array.ndim == len(shape) else array[None, ..., None]
    if array.shape[1:] != shape:
        raise UsageError(
            f"--input={path}: arrays of shape {array.shape}; this model takes examples of shape {shape} "
            f"(a batch: (N, {', '.join(map(str, shape))}))"
        )
    if np.issubdtype(example.dtype, np.integer):
        info = np.iinfo(example.dtype)
        if array.min() < info.min or array.max() > info.max or not np.all(np.mod(array, 1) == 0):
            raise UsageError(
                f"--input={path}: values from {array.min()} to {array.max()}; the model's examples are {example.dtype} "
                f"({info.min}..{info.max}) before preprocessing: save them as the dataset stores them"
            )
    return array.astype(example.dtype)
