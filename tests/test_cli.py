"""The command-line contract: listing, and bad input -> exit 2 with one clear line and an untouched workdir."""

import hashlib
import json

import pytest

from conftest import QUICK, run_cli


def snapshot(directory):
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory, mnist_available):
    workdir = tmp_path_factory.mktemp("run")
    result = run_cli("--experiment=mnist_cnn", f"--workdir={workdir}", *QUICK, "--config.train.max_steps=2")
    assert result.returncode == 0, result.stderr
    return workdir


def test_list_experiments_names_each_with_a_description():
    result = run_cli("--list_experiments")
    assert result.returncode == 0
    line = next(line for line in result.stdout.splitlines() if line.startswith("mnist_cnn "))
    assert "CNN" in line


BAD_INPUTS = [
    (["--experiment=mnist_cn"], {}, "did you mean mnist_cnn"),
    (["--experiment=mnist_cnn", "--config.optim.learnin_rate=0.1"], {}, 'Did you mean "learning_rate"'),
    (["--experiment=mnist_cnn", "--config.nonexistent=1"], {}, "unknown config key 'nonexistent'"),
    (["--experiment=mnist_cnn", "--config.data.batch_size=abc"], {}, "--config.data.batch_size=abc"),
    (["--experiment=mnist_cnn", "--config.data.batch_size=0"], {}, "batch_size=0: must be > 0"),
    (["--experiment=mnist_cnn", "--config.optim.learning_rate=-0.1"], {}, "learning_rate=-0.1: must be > 0"),
    (["--experiment=mnist_cnn", "--config.optim.name=adamm"], {}, "choose one of"),
    (["--experiment=mnist_cnn", "--config.dtype=float64"], {}, "float32 or bfloat16"),
    (["--experiment=mnist_cnn", "--config.matmul_dtype=float16"], {}, "must be bfloat16, float32 or empty"),
    (["--experiment=mnist_cnn", "--config.mesh.cpu_devices=-1"], {}, "cpu_devices=-1: must be >= 0"),
    (
        ["--experiment=mnist_cnn", "--config.matmul_dtype=bfloat16"],
        {},
        "CNN (experiment mnist_cnn) has no matmul_dtype",
    ),
    (["--experiment=mnist_cnn", "stray"], {}, "unexpected arguments"),
    (["--experiment=missing/file.py"], {}, "no such file"),
    (["--experiment=mnist_cnn"], {"JAXDL_DATA_DIR": "/nonexistent"}, "MNIST not found"),
    (
        ["--experiment=mnist_cnn", "--config.data.batch_size=30"],
        {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
        "not divisible by the 4 devices",
    ),
]


@pytest.mark.parametrize(("args", "env", "message"), BAD_INPUTS, ids=[" ".join(a[-1:]) for a, _, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_leaves_the_workdir_alone(trained_workdir, args, env, message):
    before = snapshot(trained_workdir)
    result = run_cli(*args, f"--workdir={trained_workdir}", env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("jaxdl: error: ") and message in last, last
    assert snapshot(trained_workdir) == before


def test_a_workdir_that_is_a_file_is_rejected(tmp_path, mnist_available):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("keep me")
    result = run_cli("--experiment=mnist_cnn", f"--workdir={not_a_dir}/run", *QUICK)
    assert result.returncode == 2 and "is a file, not a directory" in result.stderr
    assert not_a_dir.read_text() == "keep me"


def test_a_run_saved_before_a_field_existed_still_loads_with_that_fields_default(tmp_path):
    import jaxdl

    config = jaxdl.get_config("mnist_cnn")
    config.optim.learning_rate = 0.123  # the run's own value survives
    saved = json.loads(config.to_json())
    del saved["optim"]["l1"]  # as written before optim.l1 was added
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = jaxdl.config.load_config(tmp_path)
    assert loaded.optim.l1 == 0.0 and loaded.optim.learning_rate == 0.123
    assert loaded.optim.no_decay == tuple(config.optim.no_decay)  # JSON lists back to tuples
