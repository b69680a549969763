"""Models: plain Flax (linen) modules. Each takes (inputs, train: bool) and is pure: init/apply."""

from jaxdl.models.cnn import CNN
from jaxdl.models.transformer import GPT

__all__ = ["CNN", "GPT"]
