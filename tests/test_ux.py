"""What a user sees and uses around a run: the start-up summary, readable eval lines, plots, TensorBoard events, a
profile, --mode=eval/predict/explain, jaxdl.load, a user's own experiment file, and bad input to those modes.

One short mnist_cnn run (2,048 training images, 3 epochs of 64 steps) through the command line serves most tests.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import jaxdl
from jaxdl import inputs, plot
from jaxdl.explain import PANEL_INCHES as EXPLAIN_PANEL_INCHES

from conftest import QUICK, ROOT, read_metrics, run_cli, tiny_run_config

STEPS_PER_EPOCH, EPOCHS = 64, 3
TRAIN = [
    "--experiment=mnist_cnn",
    "--config.data.train_examples=2048",
    "--config.data.test_examples=250",
    "--config.data.batch_size=32",
    "--config.data.eval_batch_size=125",
    f"--config.train.num_epochs={EPOCHS}",
    "--config.train.log_every_steps=16",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_available):
    workdir = tmp_path_factory.mktemp("ux") / "run"
    result = run_cli(*TRAIN, f"--workdir={workdir}", "--profile_steps=3:4")
    assert result.returncode == 0, result.stderr
    return workdir, result


@pytest.fixture(scope="module")
def model(trained):
    return jaxdl.load(trained[0])


def png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        size = image.size
        assert len(np.unique(np.asarray(image.convert("L")))) > 10  # something was drawn
    with Image.open(path) as image:
        image.verify()  # the file is whole (checksums of every chunk)
    return size


def inches_to_pixels(width, height):
    return round(width * plot.DPI), round(height * plot.DPI)


def test_the_run_reports_its_model_data_mesh_and_workdir_then_readable_eval_lines(trained, model):
    workdir, result = trained
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(model.params))
    assert f"Total Parameters: {count:,}" in result.stderr  # nn.tabulate's table
    assert re.search(r"Conv_1 +│ Conv +│ float32\[1,14,14,16\] +│ float32\[1,14,14,32\]", result.stderr)
    assert f"{count:,} parameters, {count * 4 / 2**20:.4f} MB" in result.stderr  # float32; under 1 MB: 4 decimals
    assert (workdir / "model_summary.txt").read_text().count("Conv_0") == 1
    start = next(line for line in result.stderr.splitlines() if line.startswith("mnist_cnn: "))
    assert "2048 train, 250 eval, 250 test examples" in start and "1 device(s)" in start
    assert start.endswith(f"workdir {workdir}")
    for record in [m for m in read_metrics(workdir) if m["split"] == "eval"]:
        step = record["step"]
        line = f"step {step}/{STEPS_PER_EPOCH * EPOCHS} (epoch {step / STEPS_PER_EPOCH:.2f}) eval: "
        line += f"loss {record['loss']:.4f}, accuracy {record['accuracy']:.4f}"
        assert line in result.stderr


def test_training_writes_curves_a_confusion_matrix_and_the_worst_test_images(trained):
    workdir, result = trained
    plots = workdir / "plots"
    runs = [read_metrics(workdir)]
    assert plot.panel_names(runs) == ["loss", "accuracy", "macro_f1", "learning_rate"]  # 4 panels: 3 + 1
    assert png_size(plots / "curves.png") == inches_to_pixels(3 * plot.PANEL_INCHES[0], 2 * plot.PANEL_INCHES[1])
    assert png_size(plots / "confusion_matrix.png") == inches_to_pixels(*plot.CONFUSION_INCHES)
    assert png_size(plots / "worst_test_images.png") == inches_to_pixels(*plot.WORST_INCHES)
    assert "plots: " in result.stderr


def test_the_plot_command_overlays_runs_and_rejects_a_directory_without_metrics(trained, tmp_path, capsys):
    workdir, _ = trained
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(workdir / "metrics.jsonl", other / "metrics.jsonl")
    command = [sys.executable, "-m", "jaxdl.plot", str(workdir), str(other), f"--out={tmp_path / 'both.png'}"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert png_size(tmp_path / "both.png") == inches_to_pixels(3 * plot.PANEL_INCHES[0], 2 * plot.PANEL_INCHES[1])
    assert plot.main([str(tmp_path / "nothing")]) == 2  # the same entry point, in-process
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and message.startswith("jaxdl.plot: error: ") and "metrics.jsonl" in message


def test_eval_mode_reproduces_the_logged_test_and_eval_metrics(trained):
    workdir, _ = trained
    logged = read_metrics(workdir)
    trained_test = next(m for m in logged if m["split"] == "test")
    first_eval = next(m for m in logged if m["split"] == "eval")  # no validation split: evaluated on test
    result = run_cli(f"--workdir={workdir}", "--experiment=mnist_cnn", "--mode=eval")
    assert result.returncode == 0, result.stderr
    assert f"accuracy {trained_test['accuracy']:.4f}" in result.stdout
    appended = read_metrics(workdir)[len(logged)]
    numbers = lambda record: {k: v for k, v in record.items() if not isinstance(v, str)}  # pytest 9 approx: no str
    assert appended["split"] == trained_test["split"]
    assert numbers(appended) == pytest.approx(numbers(trained_test), rel=1e-6)
    step = first_eval["step"]
    result = run_cli(f"--workdir={workdir}", "--experiment=mnist_cnn", "--mode=eval", f"--checkpoint_step={step}")
    assert result.returncode == 0, result.stderr
    reevaluated = read_metrics(workdir)[-1]
    assert reevaluated["split"] == "test" and numbers(reevaluated) == pytest.approx(numbers(first_eval), rel=1e-6)


def test_predict_mode_classifies_a_png_of_a_test_image_like_the_library_and_the_label(trained, model, tmp_path):
    workdir, _ = trained
    test = model.setup.test_source.take(np.arange(50))
    confident = np.flatnonzero(model.predict(test["inputs"]).max(-1) > 0.9)
    png = tmp_path / "digit.png"
    for index in confident:  # an image the model gets right after the PNG round trip (3x upscaled, RGB)
        pixels = test["inputs"][index, ..., 0]
        Image.fromarray(pixels).convert("RGB").resize((84, 84), Image.NEAREST).save(png)
        classes, probabilities = model.top_k(inputs.read_examples(png, model.example()), k=2)
        if classes[0, 0] == test["targets"][index]:
            break
    label = int(test["targets"][index])
    assert classes[0, 0] == label
    result = run_cli(f"--workdir={workdir}", "--experiment=mnist_cnn", "--mode=predict", f"--input={png}", "--top_k=2")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith(f"{png}: "))
    printed = re.findall(r"(\d+) \(([\d.]+)%\)", line)
    assert [int(c) for c, _ in printed] == classes[0].tolist()
    assert int(printed[0][0]) == label
    assert [float(p) for _, p in printed] == pytest.approx(100 * probabilities[0], abs=0.006)

    batch = tmp_path / "batch.npy"
    np.save(batch, test["inputs"][:5])
    result = run_cli(f"--workdir={workdir}", "--experiment=mnist_cnn", "--mode=predict", f"--input={batch}")
    assert result.returncode == 0, result.stderr
    top = [int(re.search(r"\]: (\d+) ", line).group(1)) for line in result.stdout.splitlines() if "batch.npy[" in line]
    assert top == model.predict(test["inputs"][:5]).argmax(-1).tolist()


def test_saliency_is_the_input_gradient_and_class_activation_maps_cover_the_image(model):
    examples = model.setup.test_source.take(np.arange(4))["inputs"]
    x = model.preprocess(examples)
    predicted = model(x).argmax(-1)
    saliency = model.saliency(examples)
    assert saliency.shape == x.shape and np.isfinite(saliency).all() and saliency[0].std() > 0
    # The largest gradient of example 0, checked by a central finite difference (the network is piecewise linear).
    pixel = np.unravel_index(np.argmax(saliency[0]), saliency[0].shape)
    step = np.zeros_like(x[:1])
    step[(0, *pixel)] = 1e-2
    logit = lambda inputs: model(inputs)[0, predicted[0]]
    assert abs(logit(x[:1] + step) - logit(x[:1] - step)) / 2e-2 == pytest.approx(saliency[(0, *pixel)], rel=0.05)
    maps = model.class_activation_maps(examples)
    assert sorted(maps) == ["Grad-CAM", "HiResCAM"]
    for cam in maps.values():
        assert cam.shape == x.shape[:3] and cam.min() >= 0 and cam.max() <= 1
    assert maps["HiResCAM"][0].std() > 0


def test_explain_mode_writes_an_overlay_png(trained, model, tmp_path):
    workdir, _ = trained
    png = tmp_path / "seven.png"
    Image.fromarray(model.setup.test_source.take(np.arange(1))["inputs"][0, ..., 0]).save(png)
    result = run_cli(f"--workdir={workdir}", "--experiment=mnist_cnn", "--mode=explain", f"--input={png}")
    assert result.returncode == 0, result.stderr
    out = workdir / "explain" / "seven.png"
    assert f"{out}: predicted" in result.stdout
    assert png_size(out) == inches_to_pixels(4 * EXPLAIN_PANEL_INCHES, EXPLAIN_PANEL_INCHES + 0.8)


def test_tensorboard_reads_the_logged_scalars(trained):
    from tensorboard.backend.event_processing import event_accumulator

    workdir, _ = trained
    events = event_accumulator.EventAccumulator(str(workdir / "tensorboard"))
    events.Reload()
    lines = read_metrics(workdir)
    training = lines[: next(i for i, m in enumerate(lines) if m["split"] == "test") + 1]  # not --mode=eval's lines
    for split, name in [("train", "loss"), ("train", "learning_rate"), ("eval", "accuracy"), ("test", "accuracy")]:
        logged = [(m["step"], m[name]) for m in training if m["split"] == split]
        read = [(e.step, e.value) for e in events.Scalars(f"{split}/{name}")]
        assert [s for s, _ in read] == [s for s, _ in logged] and read
        assert [v for _, v in read] == pytest.approx([v for _, v in logged], rel=1e-6)


def test_profile_steps_writes_a_trace(trained):
    workdir, result = trained
    traces = list((workdir / "profile" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    assert f"profile of steps 3..4 written to {workdir / 'profile'}" in result.stderr


USER_EXPERIMENT = '''
"""A user's own model class in a file of their own."""
import flax.linen as nn
import jaxdl
from jaxdl import data, tasks


class TwoLayers(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(nn.Dense(self.hidden, name="hidden")(x.reshape(x.shape[0], -1)))
        return nn.Dense(10, name="out")(x)


def get_config():
    config = jaxdl.default_config()
    config.data.update(batch_size=64, eval_batch_size=100, train_examples=1024, test_examples=300)
    config.train.max_steps = 40
    config.model_hidden = 32
    return config


def build(config):
    return jaxdl.Experiment(
        model=TwoLayers(config.model_hidden),
        task=tasks.Classification(num_classes=10),
        data=data.Dataset(train=data.mnist.load("train"), test=data.mnist.load("test"), preprocess=data.mnist.to_float),
    )
'''


def test_library_train_load_predict_round_trip_with_a_users_own_model(tmp_path, mnist_available):
    path = tmp_path / "mine.py"
    path.write_text(USER_EXPERIMENT)
    workdir = tmp_path / "mine_run"
    test = jaxdl.train(jaxdl.get_config(str(path)), workdir)
    model = jaxdl.load(workdir)
    assert model.step == 40 and sorted(model.params) == ["hidden", "out"]
    source = model.setup.test_source
    examples = source.take(np.arange(len(source)))
    probabilities = model.predict(examples["inputs"])
    assert probabilities.shape == (300, 10) and np.allclose(probabilities.sum(-1), 1, atol=1e-5)
    assert np.mean(probabilities.argmax(-1) == examples["targets"]) == pytest.approx(test["accuracy"])
    assert model.class_activation_maps(examples["inputs"][:2]) is None  # no convolution in this model
    # The command line runs the same file by its path.
    result = run_cli(f"--experiment={path}", f"--workdir={workdir}", "--mode=eval")
    assert result.returncode == 0, result.stderr
    assert read_metrics(workdir)[-1]["accuracy"] == pytest.approx(test["accuracy"])


def test_the_jaxdl_console_script_runs():
    jaxdl_script = shutil.which("jaxdl")
    assert jaxdl_script, "the jaxdl console script is not installed: pip install -e ."
    # PYTHONPATH: the editable install may point at another checkout of the project than this one.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([jaxdl_script, "--list_experiments"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0 and "mnist_cnn " in result.stdout


@pytest.fixture(scope="module")
def language_model_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lm")
    config = tiny_run_config("shakespeare_gpt")
    config.train.max_steps = 2
    jaxdl.train(config, workdir)
    return workdir


def snapshot(directory):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing file", "no such file"),
        ("no --input", "needs --input=FILE"),
        ("not an image", "not an image Pillow can read"),
        ("language model", "--mode=predict is for classifiers"),
        ("bad profile window", "--profile_steps=3:x: expected N:M"),
    ],
)
def test_bad_input_to_the_new_modes_exits_2_with_one_line(trained, language_model_workdir, tmp_path, case, message):
    workdir, _ = trained
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text(json.dumps({"this is": "text"}))
    some_image = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(some_image)
    args = {
        "missing file": ["--mode=predict", f"--input={tmp_path / 'absent.png'}"],
        "no --input": ["--mode=predict"],
        "not an image": ["--mode=predict", f"--input={not_an_image}"],
        "language model": ["--mode=predict", f"--input={some_image}"],
        "bad profile window": ["--profile_steps=3:x", *TRAIN[1:]],
    }[case]
    target = language_model_workdir if case == "language model" else workdir
    experiment = "shakespeare_gpt" if case == "language model" else "mnist_cnn"
    before = snapshot(target)
    result = run_cli(f"--experiment={experiment}", f"--workdir={target}", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxdl: error: ") and message in lines[0], result.stderr
    assert snapshot(target) == before


def test_an_mfu_above_1_warns_once_that_the_peak_is_too_low(tmp_path):
    """Only a peak below the real one gives MFU > 1 (a cached measurement from a busy machine, or a typo)."""
    args = ("--experiment=mnist_cnn", *QUICK, "--config.train.max_steps=6", "--compilation_cache=off")
    result = run_cli(*args, "--config.train.peak_flops=1e3", f"--workdir={tmp_path / 'low'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(m["mfu"] > 1 for m in read_metrics(tmp_path / "low") if m["split"] == "train")  # three train lines
    warnings = [line for line in result.stderr.splitlines() if "exceeds 1" in line]
    assert warnings == [warnings[0]] and "--config.train.peak_flops; raise it" in warnings[0], warnings
