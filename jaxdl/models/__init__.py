"""Models: plain Flax (linen) modules. Each takes (inputs, train: bool) and is pure: init/apply."""

from jaxdl.models.autoencoder import ConvAutoencoder
from jaxdl.models.cnn import CNN
from jaxdl.models.gan import GAN
from jaxdl.models.mlp import MLP
from jaxdl.models.rnn import RNNClassifier
from jaxdl.models.transformer import GPT

__all__ = ["CNN", "GAN", "GPT", "MLP", "ConvAutoencoder", "RNNClassifier"]
