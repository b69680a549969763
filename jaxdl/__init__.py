"""jaxdl: pure Flax models, optax optimizers and one jit-compiled, sharded training loop.

python -m jaxdl.main --experiment=mnist_cnn          # command line
jaxdl.train(jaxdl.get_config("mnist_cnn"), "runs/x")  # library: train, returns the test metrics
model = jaxdl.load("runs/x")                          # a trained run's model: model.predict(examples)
"""

from jaxdl import data
from jaxdl.config import Experiment, default_config, get_config
from jaxdl.errors import UsageError
from jaxdl.inference import Model, load
from jaxdl.training import train_and_evaluate

train = train_and_evaluate

__all__ = [
    "Experiment",
    "Model",
    "UsageError",
    "data",
    "default_config",
    "get_config",
    "load",
    "train",
    "train_and_evaluate",
]
