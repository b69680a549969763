"""Tasks: how model outputs and a batch become a loss, metrics and a train step."""

from jaxdl.tasks.classification import Classification
from jaxdl.tasks.language_model import LanguageModel
from jaxdl.tasks.supervised import SupervisedTask

__all__ = ["Classification", "LanguageModel", "SupervisedTask"]
