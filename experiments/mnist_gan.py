"""MNIST DCGAN: a generator and a discriminator, each with its own Adam (b1 0.5); writes sample grids."""

import ml_collections

import jaxdl
from jaxdl import data, models, tasks


def get_config() -> ml_collections.ConfigDict:
    config = jaxdl.default_config()
    config.data.batch_size = 64
    config.train.num_epochs = 5
    config.train.eval_every_steps = 0  # 0 = each epoch: scores and a grid of samples (from fixed latent vectors)
    config.train.grad_norm = True  # d_grad_norm and g_grad_norm: how a GAN's balance is watched
    # Shared by both networks; each network's section below overrides it (jaxdl.network_optimizers).
    config.optim.update(name="adam", learning_rate=2e-4, schedule="constant")
    config.optim.generator = ml_collections.ConfigDict({"learning_rate": 2e-4, "b1": 0.5})
    config.optim.discriminator = ml_collections.ConfigDict({"learning_rate": 2e-4, "b1": 0.5})
    config.model = ml_collections.ConfigDict(
        {"latent_dim": 64, "generator_features": (64, 32), "discriminator_features": (32, 64)}
    )
    return config


def build(config: ml_collections.ConfigDict) -> jaxdl.Experiment:
    if config.train.skip_nonfinite:  # checked here, before the run writes anything: the step needs its own optimizer
        raise jaxdl.UsageError("--config.train.skip_nonfinite is not supported by the GAN's per-network optimizers")
    return jaxdl.Experiment(
        model=models.GAN(image_shape=(28, 28, 1), dtype=config.dtype, **config.model),
        task=tasks.Adversarial(),  # real images against generated ones; the labels are not used
        data=data.Dataset(train=data.mnist.load("train"), test=data.mnist.load("test"), preprocess=data.mnist.to_float),
    )
