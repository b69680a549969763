"""MNIST digits read row by row (28 steps of 28 pixels) by an LSTM of 128 units: >= 98% test accuracy."""

import ml_collections

import jaxdl
from jaxdl import data, models, tasks


def get_config() -> ml_collections.ConfigDict:
    config = jaxdl.default_config()
    config.data.batch_size = 128
    # Measured (notes: issue 7): 98.46-98.53% over three seeds after 2 epochs; constant Adam 1e-3 was at 97.3%
    # after 3. A GRU (--config.model.cell=gru) reached 98.84% in 3 epochs at 5e-3.
    config.train.num_epochs = 2
    config.optim.update(name="adam", schedule="onecycle", learning_rate=1e-2)
    config.optim.update(onecycle_pct_start=0.25, onecycle_final_div=1e3)
    config.model = ml_collections.ConfigDict({"hidden": 128, "num_layers": 1, "cell": "lstm", "unroll": 1})
    return config


def build(config: ml_collections.ConfigDict) -> jaxdl.Experiment:
    return jaxdl.Experiment(
        model=models.RNNClassifier(num_classes=10, dtype=config.dtype, **config.model),
        task=tasks.Classification(num_classes=10),
        data=data.Dataset(train=data.mnist.load("train"), test=data.mnist.load("test"), preprocess=data.mnist.to_float),
    )
