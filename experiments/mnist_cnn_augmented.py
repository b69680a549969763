"""MNIST with a wider CNN, batch norm and random rotations/shifts/scaling on the device: >= 99.5% test accuracy."""

import functools

import ml_collections

import jaxdl
from jaxdl import data, models, tasks
from jaxdl.data import augment


def get_config() -> ml_collections.ConfigDict:
    config = jaxdl.default_config()
    config.data.batch_size = 128
    # Each training image is rotated, scaled and shifted by a fresh random amount every time it is seen (one
    # bilinear resampling inside the compiled step); 0 everywhere = no augmentation.
    config.data.max_degrees = 10.0
    config.data.max_shift = 2.0  # pixels, sub-pixel amounts included
    config.data.max_scale = 0.1  # zoom by a factor in [0.9, 1.1]
    config.train.num_epochs = 8
    config.optim.update(name="adam", schedule="onecycle", learning_rate=5e-3)
    config.optim.update(onecycle_pct_start=0.25, onecycle_final_div=1e3)
    config.model = ml_collections.ConfigDict(
        {"features": (32, 64, 128), "dense": 256, "batch_norm": True, "dropout": 0.25}
    )
    config.task = ml_collections.ConfigDict({"label_smoothing": 0.0})
    return config


def build(config: ml_collections.ConfigDict) -> jaxdl.Experiment:
    d = config.data
    augmented = d.max_degrees or d.max_shift or d.max_scale
    affine = functools.partial(
        augment.random_affine, max_degrees=d.max_degrees, max_shift=d.max_shift, max_scale=d.max_scale
    )
    return jaxdl.Experiment(
        model=models.CNN(num_classes=10, dtype=config.dtype, **config.model),
        task=tasks.Classification(num_classes=10, label_smoothing=config.task.label_smoothing),
        data=data.Dataset(
            train=data.mnist.load("train"),
            test=data.mnist.load("test"),
            preprocess=data.mnist.to_float,
            augment=affine if augmented else None,
        ),
    )
