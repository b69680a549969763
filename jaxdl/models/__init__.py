"""Models: plain Flax (linen) modules. Each takes (inputs, train: bool) and is pure: init/apply."""

from jaxdl.models.cnn import CNN

__all__ = ["CNN"]
