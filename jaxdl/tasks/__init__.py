"""Tasks: how model outputs and a batch become a loss, metrics and a train step."""

from jaxdl.tasks.binary import BinaryClassification
from jaxdl.tasks.classification import Classification
from jaxdl.tasks.gan import Adversarial
from jaxdl.tasks.language_model import LanguageModel
from jaxdl.tasks.reconstruction import Reconstruction
from jaxdl.tasks.regression import Regression
from jaxdl.tasks.supervised import SupervisedTask

__all__ = [
    "Adversarial",
    "BinaryClassification",
    "Classification",
    "LanguageModel",
    "Reconstruction",
    "Regression",
    "SupervisedTask",
]
