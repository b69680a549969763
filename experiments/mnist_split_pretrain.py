"""Transfer learning, step 1: the mnist_cnn model trained on digits 0-4 only."""

import ml_collections

import jaxdl
from experiments import mnist_cnn
from jaxdl import data, models, tasks

CLASSES = (0, 1, 2, 3, 4)


def get_config() -> ml_collections.ConfigDict:
    config = mnist_cnn.get_config()
    config.train.num_epochs = 3
    return config


def build(config: ml_collections.ConfigDict) -> jaxdl.Experiment:
    return split_experiment(config, CLASSES, per_class=0)


def split_experiment(config: ml_collections.ConfigDict, classes: tuple, per_class: int) -> jaxdl.Experiment:
    """mnist_cnn's model and task on the digits `classes` (relabelled 0..4), `per_class` training images each."""
    base = mnist_cnn.build(config).data
    return jaxdl.Experiment(
        model=models.CNN(num_classes=len(classes), dtype=config.dtype, **config.model),
        task=tasks.Classification(num_classes=len(classes), label_smoothing=config.task.label_smoothing),
        data=data.Dataset(
            train=data.select_classes(base.train, classes, per_class, seed=config.seed),
            test=data.select_classes(base.test, classes),
            preprocess=base.preprocess,
            augment=base.augment,
        ),
    )
