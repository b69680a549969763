"""Transfer learning, step 1: the mnist_cnn model trained on digits 0-4 only."""

import functools

import ml_collections
import numpy as np

import jaxdl
from experiments import mnist_cnn
from jaxdl import data, models, tasks
from jaxdl.data import augment

CLASSES = (0, 1, 2, 3, 4)


def get_config() -> ml_collections.ConfigDict:
    config = mnist_cnn.get_config()
    # The recipe picked on a validation split for issue 5 (BUILD_NOTES.md "Fine-tuning gains"): a wider model with
    # dropout and random rotations, zooms and shifts, so that the 0-4 features carry over as well as they can.
    config.model.update(features=(32, 64), dense=256, dropout=0.5)
    config.train.num_epochs = 4
    config.optim.ema_decay = 0.0  # not mnist_cnn's average: issue 5's figures were measured without one
    config.data.max_shift = 2  # pixels; with max_degrees or max_scale > 0 one sub-pixel affine resampling does all
    config.data.max_degrees = 15.0  # random rotations of up to this many degrees; 0 = none
    config.data.max_scale = 0.15  # random zooms by a factor in [1 - max_scale, 1 + max_scale]; 0 = none
    return config


def build(config: ml_collections.ConfigDict) -> jaxdl.Experiment:
    return split_experiment(config, CLASSES, per_class=0)


def split_experiment(
    config: ml_collections.ConfigDict, classes: tuple, per_class: int, validation_per_class: int = 0
) -> jaxdl.Experiment:
    """mnist_cnn's model and task on the digits `classes` (relabelled 0..4), `per_class` training images each
    (0 = all), and `validation_per_class` other training images each as the validation split (0 = none)."""
    base = mnist_cnn.build(config).data
    train = validation = data.select_classes(base.train, classes)
    if per_class:
        train, validation = labelled_subset(train, per_class, validation_per_class, seed=config.seed)
    return jaxdl.Experiment(
        model=models.CNN(num_classes=len(classes), dtype=config.dtype, **config.model),
        task=tasks.Classification(num_classes=len(classes), label_smoothing=config.task.label_smoothing),
        data=data.Dataset(
            train=train,
            validation=validation if validation_per_class else None,
            test=data.select_classes(base.test, classes),
            preprocess=base.preprocess,
            augment=affine_augmentation(config.data) or base.augment,
        ),
    )


def affine_augmentation(settings: ml_collections.ConfigDict) -> augment.Augmentation | None:
    """Random rotation, zoom and shift when a rotation or zoom is asked for; None leaves mnist_cnn's integer shifts."""
    if not (settings.max_degrees or settings.max_scale):
        return None
    return functools.partial(
        augment.random_affine,
        max_degrees=settings.max_degrees,
        max_shift=settings.max_shift,
        max_scale=settings.max_scale,
    )


def labelled_subset(
    source: data.ArraySource, per_class: int, validation_per_class: int, seed: int
) -> tuple[data.ArraySource, data.ArraySource]:
    """(train, validation): a seeded random `per_class` examples of each class, and `validation_per_class` others.
    The training images do not depend on `validation_per_class`, so a recipe picked on validation is the one run."""
    targets = source.arrays["targets"]
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        train.append(members[:per_class])
        validation.append(members[per_class : per_class + validation_per_class])
    return tuple(data.ArraySource(source.take(np.sort(np.concatenate(indices)))) for indices in (train, validation))
