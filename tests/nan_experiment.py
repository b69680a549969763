"""Test-only experiment: mnist_cnn whose images of one digit are all NaN, to make some training steps non-finite."""

import numpy as np

import jaxdl
from experiments import mnist_cnn


def get_config():
    config = mnist_cnn.get_config()
    config.data.nan_digit = 3  # images of this digit become NaN; -1 = none
    return config


def build(config):
    experiment = mnist_cnn.build(config)

    def preprocess(batch):
        batch = experiment.data.preprocess(batch)
        nan = (batch["targets"] == config.data.nan_digit)[:, None, None, None]
        return {**batch, "inputs": np.where(nan, np.float32("nan"), batch["inputs"])}

    data = jaxdl.data.Dataset(train=experiment.data.train, test=experiment.data.test, preprocess=preprocess)
    return jaxdl.Experiment(model=experiment.model, task=experiment.task, data=data)
