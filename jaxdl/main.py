"""Command line: `python -m jaxdl.main --experiment=NAME [--workdir=DIR] [--config.KEY=VALUE ...]`.

Flags are parsed in two passes: the first reads `--experiment`, whose `get_config()` then becomes the
`--config` flag, so the second pass can type-check every `--config.a.b=v` override against it.
Exit status: 0 success, 2 bad input (one line on stderr), 1 a failure during the run.
"""

from __future__ import annotations

import ast
import keyword
import os
import sys
import time
from pathlib import Path

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxdl import compiler, inference, sharding
from jaxdl import config as config_lib
from jaxdl.errors import TrainingFailed, UsageError
from jaxdl.training import train_and_evaluate

FLAGS = flags.FLAGS
flags.DEFINE_string("experiment", None, "A registered experiment name, or a path to a .py file with get_config().")
flags.DEFINE_string("workdir", None, "Where config, metrics and checkpoints go. Default: runs/<experiment>.")
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "eval", "predict", "explain", "sample", "merge_lora", "compress"],
    "train; eval: test metrics of a checkpoint; predict: top-k classes of --input; explain: saliency and Grad-CAM "
    "of --input; sample from a language model; merge_lora: write WORKDIR/merged with the adapters folded in; "
    "compress: a compressed copy of a checkpoint (jaxdl.compress).",
)
flags.DEFINE_integer("checkpoint_step", None, "eval/predict/explain/compress: this checkpoint instead of the newest.")
flags.DEFINE_string("input", None, "predict/explain: a PNG/JPEG image (any size) or a .npy array of examples.")
flags.DEFINE_integer("top_k", 3, "predict: how many classes to print per example.", lower_bound=1)
flags.DEFINE_string("profile_steps", "", "train: N:M writes a jax.profiler trace of steps N..M to WORKDIR/profile.")
flags.DEFINE_string(
    "compilation_cache",
    "",
    "Directory where compiled programs are kept for later runs (default: ~/.cache/jaxdl/xla/<machine>); "
    "'off' compiles everything afresh.",
)
flags.DEFINE_bool("list_experiments", False, "Print every registered experiment and exit.")
# Multi-process (multi-host) runs: every process runs the same command with its own --process_id.
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, e.g. 10.0.0.1:1234.")
flags.DEFINE_integer("num_processes", None, "How many processes take part.")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")
flags.DEFINE_bool("distributed", False, "Join a multi-process run found by auto-detection (TPU pod, SLURM, MPI).")
flags.DEFINE_integer("heartbeat_timeout_seconds", 100, "Stop when another process has been silent this long.")


def _fail(message: str, status: int = 2) -> None:
    """One line on stderr, exit `status` (2: bad input), and nothing after it.

    Background threads (orbax's writers after a full disk, say) may be printing their own tracebacks at this moment,
    and once, in CI, one's last line came after this one. So their sys.stderr becomes /dev/null, a moment passes for
    a line one of them has begun to end, the file descriptor itself is pointed at /dev/null (for writers below
    Python), and the line is written to a copy of it. os._exit skips the shutdown, where they would print more.
    """
    sys.stdout.flush()
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (never closed: the process ends here)
    time.sleep(0.01)
    line, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.write(line, f"jaxdl: error: {message}\n".encode())
    os._exit(status)


def _split_keyword_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Take out `--config.a.from=v` style overrides: ml_collections parses key paths as Python, where a keyword
    such as `from` is a syntax error. They are applied after parsing instead."""
    kept, taken = [], []
    for arg in argv:
        path, _, value = arg.removeprefix("--config.").partition("=")
        if arg.startswith("--config.") and "=" in arg and any(keyword.iskeyword(p) for p in path.split(".")):
            taken.append((path, value))
        else:
            kept.append(arg)
    return kept, taken


def parse_flags(argv: list[str]) -> list[str]:
    """absl flags parser that turns every parsing problem into one line and exit status 2."""
    try:
        FLAGS(argv, known_only=True)
        if FLAGS.list_experiments:
            return argv[:1]
        if not FLAGS.experiment:
            raise UsageError("--experiment is required (run with --list_experiments to see the choices)")
        config = config_lib.get_config(FLAGS.experiment)
        argv, keyword_overrides = _split_keyword_overrides(argv)
        sys.argv = argv  # config_flags registers one flag per override it finds in sys.argv, when defined
        config_flags.DEFINE_config_dict("config", config, lock_config=True)
        rest = FLAGS(argv)
        for path, value in keyword_overrides:
            config_lib.set_string_field(FLAGS.config, path, value)
    except UsageError as e:
        _fail(str(e))
    except (AttributeError, KeyError) as e:
        # ml_collections reports an unknown key as the repr of a message with a "Did you mean" hint.
        message = str(e)
        message = ast.literal_eval(message) if message[:1] in "'\"" else message
        _fail(f"unknown config key {' '.join(message.split())} (--config keys are listed in the experiment file)")
    except (flags.Error, TypeError, ValueError) as e:
        _fail(" ".join(str(e).split()))
    if len(rest) > 1:
        _fail(f"unexpected arguments {rest[1:]}: every option is a --flag=value")
    return rest


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax and grain log every save and read at INFO
    if FLAGS.list_experiments:
        for name, description in config_lib.list_experiments():
            print(f"{name:28s} {description}")
        return
    workdir = FLAGS.workdir or config_lib.default_workdir(FLAGS.experiment)
    try:
        config_lib.validate(FLAGS.config)
        sharding.use_cpu_devices(FLAGS.config.mesh.cpu_devices)  # before anything starts jax's backends
        sharding.initialize_processes(
            FLAGS.coordinator_address,
            FLAGS.num_processes,
            FLAGS.process_id,
            FLAGS.distributed,
            FLAGS.heartbeat_timeout_seconds,
        )
        cache_asked = FLAGS.compilation_cache != "off"
        if cache_asked and compiler.use_compilation_cache(FLAGS.compilation_cache or None) is None:
            if FLAGS.compilation_cache:
                raise UsageError(
                    f"--compilation_cache={FLAGS.compilation_cache}: cannot create that directory; give a writable "
                    "one, or 'off'"
                )
            logging.warning("compiled programs are not cached: %s is not writable", compiler.cache_root())
        if FLAGS.mode == "train":
            train_and_evaluate(FLAGS.config, workdir, profile_steps=FLAGS.profile_steps)
            return
        # Using a trained run: its own config.json describes its model, whatever overrides it was trained with;
        # the command line still chooses the sampling options.
        config = FLAGS.config
        if (Path(workdir) / "config.json").is_file():
            config = config_lib.load_config(workdir)
            for section in ("sample", "compress"):  # options of the mode itself, not of the trained model
                if section in FLAGS.config:
                    config[section] = FLAGS.config[section]
        step = FLAGS.checkpoint_step
        if FLAGS.mode == "eval":
            inference.evaluate_checkpoint(config, workdir, step)
        elif FLAGS.mode == "predict":
            inference.predict_file(config, workdir, FLAGS.input, FLAGS.top_k, step)
        elif FLAGS.mode == "explain":
            inference.explain_file(config, workdir, FLAGS.input, step)
        elif FLAGS.mode == "sample":
            inference.sample(config, workdir)
        elif FLAGS.mode == "merge_lora":
            inference.merge_lora(config, workdir)
        elif FLAGS.mode == "compress":
            from jaxdl import compress  # another part's module; imported only when asked for

            compress.compress(config, workdir, step)
    except UsageError as e:
        _fail(str(e))
    except TrainingFailed as e:
        print(f"jaxdl: error: {e}", file=sys.stderr)
        sys.exit(1)
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1:
            raise
        # Usually another process died and a collective or the coordination service noticed. _fail's os._exit skips
        # jax's shutdown barrier, which would only wait for the dead process and then abort.
        first_line = str(e).strip().splitlines()[0][:300]
        _fail(
            f"process {jax.process_index()} of {jax.process_count()} stopped: {first_line}. If another process "
            "died, restart every process with the same command to resume from the last checkpoint.",
            status=1,
        )


def run() -> None:
    """Console-script entry point (`jaxdl ...`)."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
