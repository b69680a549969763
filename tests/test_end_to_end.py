"""Short real runs of mnist_cnn on a slice of MNIST: learning, checkpoints, resume."""

import json

import pytest

import jaxdl

from conftest import read_metrics

QUICK = {
    "data.train_examples": 512,
    "data.test_examples": 250,
    "data.batch_size": 32,
    "data.eval_batch_size": 100,
    "train.log_every_steps": 2,
}


def quick_config(**overrides):
    config = jaxdl.get_config("mnist_cnn")
    for key, value in {**QUICK, **overrides}.items():
        section, name = key.split(".") if "." in key else (None, key)
        (config[section] if section else config)[name] = value
    return config


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, mnist_available):
    workdir = tmp_path_factory.mktemp("mnist_cnn")
    test = jaxdl.train(quick_config(**{"train.num_epochs": 2}), workdir)
    return workdir, test


def test_a_short_run_learns_and_writes_everything(first_run):
    workdir, test = first_run
    lines = read_metrics(workdir)
    train = [m for m in lines if m["split"] == "train"]
    assert [m["step"] for m in train] == list(range(2, 33, 2))  # 512 / 32 = 16 steps per epoch, 2 epochs
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert [m["step"] for m in lines if m["split"] == "eval"] == [16]
    # All 250 test examples counted: 3 eval batches of 100, the last one padded and masked.
    assert lines[-1]["split"] == "test" and lines[-1]["step"] == 32 and lines[-1]["count"] == 250
    assert lines[-1]["accuracy"] == pytest.approx(test["accuracy"]) and test["accuracy"] > 0.6
    assert json.loads((workdir / "config.json").read_text())["data"]["batch_size"] == 32
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["16", "32"]
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))


def test_rerunning_resumes_at_the_saved_step(first_run):
    workdir, _ = first_run
    jaxdl.train(quick_config(**{"train.num_epochs": 3}), workdir)
    steps = [m["step"] for m in read_metrics(workdir) if m["split"] == "train"]
    assert steps == list(range(2, 33, 2)) + list(range(34, 49, 2))  # continued at 32, no step repeated
    assert "48" in {p.name for p in (workdir / "checkpoints").iterdir()}


def test_resumed_run_matches_an_uninterrupted_one_exactly(tmp_path, mnist_available):
    constant = {"optim.schedule": "constant", "optim.learning_rate": 1e-3}
    straight = jaxdl.train(quick_config(**constant, **{"train.max_steps": 12}), tmp_path / "straight")
    jaxdl.train(quick_config(**constant, **{"train.max_steps": 6}), tmp_path / "split")
    resumed = jaxdl.train(quick_config(**constant, **{"train.max_steps": 12}), tmp_path / "split")
    assert resumed == straight  # same data order, same dropout stream, same step count: bit-identical on CPU
    late = lambda w: [m for m in read_metrics(w) if m["split"] == "train" and m["step"] > 6]
    assert [m["loss"] for m in late(tmp_path / "split")] == [m["loss"] for m in late(tmp_path / "straight")]
