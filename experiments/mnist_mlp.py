"""MNIST digits with a 784-128-10 ReLU MLP, Adam, 5 epochs: >= 97.8% test accuracy."""

import ml_collections

import jaxdl
from jaxdl import data, models, tasks


def get_config() -> ml_collections.ConfigDict:
    config = jaxdl.default_config()
    config.data.batch_size = 128
    config.train.num_epochs = 5
    # One-cycle Adam reached >= 97.8% on every seed tried; constant 1e-3 stopped at 97.2% (notes: issue 7).
    config.optim.update(name="adam", schedule="onecycle", learning_rate=1e-2)
    config.model = ml_collections.ConfigDict({"hidden": (128,), "activation": "relu", "dropout": 0.0})
    return config


def build(config: ml_collections.ConfigDict) -> jaxdl.Experiment:
    return jaxdl.Experiment(
        model=models.MLP(outputs=10, dtype=config.dtype, **config.model),
        task=tasks.Classification(num_classes=10),
        data=data.Dataset(train=data.mnist.load("train"), test=data.mnist.load("test"), preprocess=data.mnist.to_float),
    )
