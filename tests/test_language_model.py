"""The character-level language model: text windows, training, and --mode=sample."""

import jax
import numpy as np
import pytest

import jaxdl
from jaxdl import inference
from jaxdl.data import text
from jaxdl.errors import UsageError

from conftest import read_metrics, run_cli

TEXT = "the quick brown fox jumps over the lazy dog. " * 40


def test_vocabulary_round_trips_and_rejects_unknown_characters():
    vocabulary = text.Vocabulary.from_text("hello")
    assert vocabulary.chars == "ehlo"
    assert vocabulary.decode(vocabulary.encode("hole")) == "hole"
    with pytest.raises(UsageError, match="not in the model's vocabulary"):
        vocabulary.encode("help")


def test_windows_shift_targets_by_one_and_validation_windows_are_fixed():
    tokens = np.arange(100, dtype=np.int32)
    train, validation = text.split_windows(tokens, context=8, train_fraction=0.9, validation_windows=5, seed=0)
    assert len(train) == 90 - 8
    batch = train.take(np.array([0, 3]))
    np.testing.assert_array_equal(batch["inputs"][1], np.arange(3, 11))
    np.testing.assert_array_equal(batch["targets"][1], np.arange(4, 12))
    held = validation.take(np.arange(5))
    assert held["inputs"].min() >= 90 and held["targets"].max() <= 99  # only the last 10%
    again = text.split_windows(tokens, 8, 0.9, 5, seed=0)[1].take(np.arange(5))
    np.testing.assert_array_equal(held["inputs"], again["inputs"])


def tiny_config(path):
    config = jaxdl.get_config("shakespeare_gpt")
    config.data.path = str(path)
    config.data.validation_windows = 50
    config.data.batch_size = 16
    config.data.eval_batch_size = 50
    config.model.update(context=32, num_layers=2, num_heads=2, width=64)
    config.optim.update(learning_rate=3e-3, warmup_steps=20, weight_decay=0.0)
    config.train.update(max_steps=300, eval_every_steps=300, log_every_steps=50)
    config.checkpoint.every_steps = 300
    config.sample.update(prompt="the quick", length=60, temperature=0.0)
    return config


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """A tiny GPT trained for 300 steps on a short, repetitive text."""
    directory = tmp_path_factory.mktemp("lm")
    corpus = directory / "corpus.txt"
    corpus.write_text(TEXT)
    config = tiny_config(corpus)
    test = jaxdl.train(config, directory / "run")
    return config, directory / "run", test


def test_a_tiny_model_memorises_a_short_text_and_sampling_reproduces_it(memorised, capsys):
    config, workdir, test = memorised
    assert test["loss"] < 0.05 and test["perplexity"] < 1.06
    generated = inference.sample(config, workdir)
    assert ("the quick" + generated) == TEXT[: len("the quick") + 60]  # 69 characters: past the 32-token context
    assert "tokens/s" in capsys.readouterr().out


def test_sampling_without_a_trained_run_or_with_unknown_characters_exits_2(memorised, tmp_path):
    config, workdir, _ = memorised
    common = ["--experiment=shakespeare_gpt", f"--config.data.path={config.data.path}", "--mode=sample"]
    model = ["--config.model.context=32", "--config.model.num_layers=2", "--config.model.num_heads=2"]
    result = run_cli(*common, f"--workdir={tmp_path / 'empty'}")
    assert result.returncode == 2 and "no checkpoints in" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "empty").exists()
    result = run_cli(*common, *model, "--config.model.width=64", f"--workdir={workdir}", "--config.sample.prompt=XYZ")
    assert result.returncode == 2, result.stderr
    assert "'XYZ' are not in the model's vocabulary" in result.stderr.strip().splitlines()[-1]


def test_lora_finetunes_a_trained_model_on_another_text_keeping_its_vocabulary(memorised, tmp_path):
    config, workdir, _ = memorised
    other = tmp_path / "other.txt"
    other.write_text("the lazy dog. " * 80)  # fewer characters than the model knows: its vocabulary must be kept
    tuned = tiny_config(other)
    tuned.init["from"] = str(workdir)
    tuned.lora.update(rank=4, targets=("*/query/kernel", "*/value/kernel"))
    tuned.train.update(max_steps=60, eval_every_steps=60, log_every_steps=10)
    tuned.checkpoint.every_steps = 60
    test = jaxdl.train(tuned, tmp_path / "lora")
    lines = [m for m in read_metrics(tmp_path / "lora") if m["split"] == "train"]
    assert lines[-1]["loss"] < 0.5 * lines[0]["loss"]  # it learns the new text
    _, state, metadata = inference.restore(tuned, tmp_path / "lora")
    assert metadata["vocabulary"] == text.Vocabulary.from_text(TEXT).chars  # the pretrained model's vocabulary
    _, pretrained, _ = inference.restore(config, workdir)
    jax.tree.map(np.testing.assert_array_equal, state.params["base"], pretrained.params)  # base weights frozen
    assert test["loss"] < 1.0
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("ZEBRA " * 100)
    bad = tiny_config(unknown)
    bad.init["from"] = str(workdir)
    with pytest.raises(UsageError, match="not in the model's vocabulary"):
        jaxdl.train(bad, tmp_path / "bad")
