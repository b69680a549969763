"""Generative models on the shared loop: the autoencoder learns, the GAN trains both nets with their own optimizers
and resumes bit-identically, and both write PNG grids at evaluation time."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

import jaxdl
from jaxdl import images, inference, network_optimizers, training

from conftest import read_metrics

GRID = 8 * (28 + 2) + 2  # 8 tiles of 28 px with 2 px of padding around and between them


def small(experiment: str, **train):
    """`experiment` on a slice of MNIST: the real model, task and loop, a few steps."""
    config = jaxdl.get_config(experiment)
    config.data.update(train_examples=256, test_examples=100, batch_size=32, eval_batch_size=40)
    config.train.update(log_every_steps=1, **train)
    config.checkpoint.every_steps = 6
    return config


def assert_png(path, size):
    assert path.is_file(), path
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size


def optimizer_counts(opt_state) -> dict[str, int]:
    """Adam's step count of each network's optimizer."""
    adam = lambda x: isinstance(x, optax.ScaleByAdamState)
    return {
        name: int(next(s.count for s in jax.tree.leaves(state, is_leaf=adam) if adam(s)))
        for name, state in opt_state.items()
    }


def test_save_grid_tiles_images_into_a_png(tmp_path):
    tiles = np.random.default_rng(0).uniform(size=(10, 5, 7, 1)).astype(np.float32)
    path = images.save_grid(tiles, tmp_path / "sub" / "grid.png", columns=4)
    assert_png(path, (4 * (7 + 2) + 2, 3 * (5 + 2) + 2))  # 10 tiles, 4 per row: 3 rows
    pixels = np.asarray(Image.open(path))
    np.testing.assert_array_equal(pixels[2:7, 2:9], np.round(tiles[0, ..., 0] * 255))  # first tile, after padding
    np.testing.assert_array_equal(pixels[9:14, 11:18], np.round(tiles[5, ..., 0] * 255))  # second row, second tile
    assert (pixels[16:21, 20:27] == 128).all()  # the empty slot after the 10th tile is background


def test_update_network_leaves_the_other_network_and_its_optimizer_untouched():
    params = {"generator": {"w": jnp.ones(3)}, "discriminator": {"w": jnp.ones(2)}}
    tx = network_optimizers.PerNetwork({name: optax.adam(0.1) for name in params})
    state = tx.init(params)
    grads = {"w": jnp.array([1.0, -1.0])}
    new_params, new_state = tx.update_network("discriminator", grads, state, params)
    assert new_params["generator"] is params["generator"] and new_state["generator"] is state["generator"]
    assert optimizer_counts(new_state) == {"generator": 0, "discriminator": 1}
    np.testing.assert_allclose(new_params["discriminator"]["w"], [0.9, 1.1], rtol=1e-5)  # Adam's first step: ±lr
    # The whole-model update (what a generic step calls) advances both, like optax.multi_transform.
    _, both = tx.update({"generator": {"w": jnp.ones(3)}, "discriminator": grads}, new_state, new_params)
    assert optimizer_counts(both) == {"generator": 1, "discriminator": 2}


def test_each_network_gets_its_own_optimizer_settings_from_the_config():
    config = jaxdl.get_config("mnist_gan")
    config.optim.discriminator.learning_rate = 1e-3
    generator = network_optimizers.network_config(config.optim, "generator", ("generator", "discriminator"))
    discriminator = network_optimizers.network_config(config.optim, "discriminator", ("generator", "discriminator"))
    assert (generator.learning_rate, generator.b1) == (2e-4, 0.5)
    assert (discriminator.learning_rate, discriminator.b1) == (1e-3, 0.5)
    assert "generator" not in discriminator and discriminator.name == "adam"
    config.optim.generator.beta1 = 0.9  # a misspelt field is an error, not silently ignored
    with pytest.raises(jaxdl.UsageError, match="beta1"):
        training.setup(config)


@pytest.mark.parametrize(
    "setting, message",
    [(("train", "skip_nonfinite", True), "skip_nonfinite"), (("optim", "trainable", ("generator/*",)), "trainable")],
)
def test_gan_rejects_settings_it_cannot_honour_before_writing_anything(tmp_path, setting, message, mnist_available):
    config = small("mnist_gan", max_steps=1)
    section, key, value = setting
    config[section][key] = value
    with pytest.raises(jaxdl.UsageError, match=message):
        jaxdl.train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_autoencoder_learns_and_writes_reconstruction_grids(tmp_path, mnist_available):
    test = jaxdl.train(small("mnist_autoencoder", num_epochs=3), tmp_path)  # 8 steps per epoch
    train = [m["loss"] for m in read_metrics(tmp_path) if m["split"] == "train"]
    assert len(train) == 24 and np.mean(train[-4:]) < 0.6 * np.mean(train[:4])
    evals = [m["mse"] for m in read_metrics(tmp_path) if m["split"] == "eval"]
    assert test["count"] == 100 and test["mse"] == test["loss"] and test["mse"] < evals[0]
    for step in (8, 16, 24):  # each epoch's evaluation, the last one the test
        assert_png(tmp_path / "images" / f"reconstructions_step{step}.png", (GRID, GRID))  # 4 pairs of 8 rows
    # The reported test MSE is the mean over the 100 test images (3 eval batches of 40, the last one padded).
    run, state, _ = inference.restore(jaxdl.config.load_config(tmp_path), tmp_path)
    inputs = jnp.asarray(run.experiment.data.preprocess(run.test_source.take(np.arange(100)))["inputs"])
    outputs = run.experiment.model.apply(state.variables, inputs)
    assert outputs.shape == inputs.shape == (100, 28, 28, 1) and (outputs >= 0).all() and (outputs <= 1).all()
    assert float(jnp.mean((outputs - inputs) ** 2)) == pytest.approx(test["mse"], rel=1e-5)


@pytest.fixture(scope="module")
def gan_straight(tmp_path_factory, mnist_available):
    """12 GAN steps in one go."""
    workdir = tmp_path_factory.mktemp("gan_straight")
    test = jaxdl.train(small("mnist_gan", max_steps=12, eval_every_steps=6), workdir)
    return workdir, test


def test_gan_trains_both_networks_each_with_its_own_optimizer(gan_straight):
    workdir, test = gan_straight
    config = jaxdl.config.load_config(workdir)
    run, state, _ = inference.restore(config, workdir)
    initial = jax.device_get(run.init_state(jax.random.split(jax.random.key(config.seed))[0]))
    for name in ("generator", "discriminator"):  # every array of both nets moved
        moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), initial.params[name], state.params[name])
        assert all(jax.tree.leaves(moved)), name
    # One update per network per step: a discriminator update must not also step the generator's Adam (or back).
    assert optimizer_counts(state.opt_state) == {"generator": 12, "discriminator": 12}
    train = [m for m in read_metrics(workdir) if m["split"] == "train"]
    assert [m["step"] for m in train] == list(range(1, 13))
    for m in train:
        assert np.isfinite([m["d_loss"], m["g_loss"]]).all() and m["loss"] == pytest.approx(m["d_loss"] + m["g_loss"])
    assert test["count"] == 100 and np.isfinite([test["d_loss"], test["g_loss"]]).all()
    assert 0 <= test["d_accuracy_real"] <= 1 and 0 <= test["d_accuracy_fake"] <= 1
    samples = run.experiment.model.apply(state.variables, jnp.zeros((3, 64)), method="generate")
    assert samples.shape == (3, 28, 28, 1) and (samples >= 0).all() and (samples <= 1).all()
    logits = run.experiment.model.apply(state.variables, samples, method="discriminate")
    assert logits.shape == (3,)
    for step in (6, 12):
        assert_png(workdir / "images" / f"samples_step{step}.png", (GRID, GRID))


def test_gan_resumed_run_matches_an_uninterrupted_one_exactly(gan_straight, tmp_path):
    straight, test = gan_straight
    jaxdl.train(small("mnist_gan", max_steps=6, eval_every_steps=6), tmp_path)  # stops (and saves) at step 6
    resumed = jaxdl.train(small("mnist_gan", max_steps=12, eval_every_steps=6), tmp_path)
    assert resumed == test
    states = [inference.restore(jaxdl.config.load_config(w), w)[1] for w in (straight, tmp_path)]
    jax.tree.map(np.testing.assert_array_equal, *jax.device_get(states))  # params and both optimizers' states
    late = lambda w: [m["loss"] for m in read_metrics(w) if m["split"] == "train" and m["step"] > 6]
    assert late(tmp_path) == late(straight)
    # The samples come from the same latent vectors every time: the resumed run's grid is the same image.
    assert (tmp_path / "images/samples_step12.png").read_bytes() == (
        straight / "images/samples_step12.png"
    ).read_bytes()
