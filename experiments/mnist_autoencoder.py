"""MNIST convolutional autoencoder (16/32 channels, 32-number code), MSE loss; writes input/reconstruction grids."""

import ml_collections

import jaxdl
from jaxdl import data, models, tasks


def get_config() -> ml_collections.ConfigDict:
    config = jaxdl.default_config()
    config.data.batch_size = 128
    config.train.num_epochs = 2
    config.optim.update(name="adam", schedule="cosine", learning_rate=2e-3)
    config.model = ml_collections.ConfigDict({"features": (16, 32), "latent": 32})
    return config


def build(config: ml_collections.ConfigDict) -> jaxdl.Experiment:
    return jaxdl.Experiment(
        model=models.ConvAutoencoder(image_shape=(28, 28, 1), dtype=config.dtype, **config.model),
        task=tasks.Reconstruction(),  # the targets are the images themselves; the labels are not used
        data=data.Dataset(train=data.mnist.load("train"), test=data.mnist.load("test"), preprocess=data.mnist.to_float),
    )
