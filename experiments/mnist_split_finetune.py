"""Transfer learning, step 2: digits 5-9 from 100 labelled images each, starting from mnist_split_pretrain."""

import ml_collections

import jaxdl
from experiments import mnist_split_pretrain


def get_config() -> ml_collections.ConfigDict:
    config = mnist_split_pretrain.get_config()
    config.data.per_class = 100  # labelled training images per digit
    config.data.validation_per_class = 0  # other training images per digit held out for choosing a recipe
    config.data.batch_size = 50
    config.train.num_epochs = 20  # 500 images: 10 steps per epoch, 200 steps
    # Best fine-tuning rate on the validation split (5e-3 vs 1e-2); from scratch 1e-2 did best (BUILD_NOTES.md).
    config.optim.learning_rate = 5e-3
    # The pretrained body; a fresh head for the new digits. From scratch: --config.init.from= --config.init.skip=()
    config.init["from"] = "runs/mnist_split_pretrain"
    config.init.skip = ("Dense_1/*",)
    config.lora.targets = ("Dense_0/kernel",)  # for --config.lora.rank=N (with --config.optim.trainable for the head)
    return config


def build(config: ml_collections.ConfigDict) -> jaxdl.Experiment:
    return mnist_split_pretrain.split_experiment(
        config, (5, 6, 7, 8, 9), config.data.per_class, config.data.validation_per_class
    )
