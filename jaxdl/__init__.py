"""jaxdl: pure Flax models, optax optimizers and one jit-compiled, sharded training loop.

python -m jaxdl.main --experiment=mnist_cnn          # command line
jaxdl.train(jaxdl.get_config("mnist_cnn"), "runs/x")  # library
"""

from jaxdl import data
from jaxdl.config import Experiment, default_config, get_config
from jaxdl.errors import UsageError
from jaxdl.training import train_and_evaluate

train = train_and_evaluate

__all__ = ["Experiment", "UsageError", "data", "default_config", "get_config", "train", "train_and_evaluate"]
