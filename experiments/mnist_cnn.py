"""MNIST digits with a small CNN (16/32 channels, one-cycle Adam, ±1 px shifts): >= 99.2% test accuracy."""

import functools

import ml_collections

import jaxdl
from jaxdl import data, models, tasks
from jaxdl.data import augment


def get_config() -> ml_collections.ConfigDict:
    # The recipe that reached >= 99.2% fastest on a 2-core CPU, with margin over seeds (BUILD_NOTES.md): evaluated
    # with the parameters' moving average, 3 epochs reach 99.0% in 600-650 steps and 99.2% in 900-1000 over four
    # seeds (without it, 4 epochs: 850-950 and 1350).
    config = jaxdl.default_config()
    config.data.batch_size = 128
    config.data.max_shift = 1  # random shifts of up to this many pixels while training; 0 = none
    config.train.num_epochs = 3
    config.optim.update(name="adam", schedule="onecycle", learning_rate=5e-3, ema_decay=0.99)
    config.optim.update(onecycle_pct_start=0.25, onecycle_final_div=1e3)
    config.model = ml_collections.ConfigDict({"features": (16, 32), "dense": 128, "batch_norm": False, "dropout": 0.0})
    config.task = ml_collections.ConfigDict({"label_smoothing": 0.0})
    return config


def build(config: ml_collections.ConfigDict) -> jaxdl.Experiment:
    shift = config.data.max_shift
    return jaxdl.Experiment(
        model=models.CNN(num_classes=10, dtype=config.dtype, **config.model),
        task=tasks.Classification(num_classes=10, label_smoothing=config.task.label_smoothing),
        data=data.Dataset(
            train=data.mnist.load("train"),
            test=data.mnist.load("test"),
            preprocess=data.mnist.to_float,
            augment=functools.partial(augment.random_shift, max_shift=shift) if shift else None,
        ),
    )
