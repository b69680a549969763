"""Issue 5's figures: does fine-tuning pay? Runs each variant through the command line, prints a markdown table.

    JAXDL_DATA_DIR=../shared/data python benchmarks/transfer.py [--runs=runs/transfer]

Pretrains mnist_split_pretrain (digits 0-4) and mnist_cnn when their workdirs are missing, then trains the
digits 5-9 variants (100 labelled images per digit) and the scikit-learn digits variants, each in a fresh workdir.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

flags.DEFINE_string("runs", "runs/transfer", "Where the variants' workdirs go.")
FLAGS = flags.FLAGS

SPLIT_VARIANTS = {
    "(a) fine-tuned, fresh head": [],
    "(b) fine-tuned, convolutions frozen": ["--config.optim.trainable=('Dense_*',)"],
    "(c) LoRA rank 4 on Dense_0 + fresh head": ["--config.lora.rank=4", "--config.optim.trainable=('Dense_1/*',)"],
    "(d) from scratch, same steps": ["--config.init.from=", "--config.init.skip=()"],
}
DIGITS_VARIANTS = {"fine-tuned from mnist_cnn": [], "from scratch, same steps": ["--config.init.from="]}


def train(experiment: str, workdir: Path, *overrides: str) -> dict:
    """Run one training to completion in `workdir` (reusing a finished one); its test metrics and wall time."""
    metrics = workdir / "metrics.jsonl"
    if not (metrics.exists() and '"split": "test"' in metrics.read_text()):
        start = time.time()
        command = [sys.executable, "-m", "jaxdl.main", f"--experiment={experiment}", f"--workdir={workdir}", *overrides]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        (workdir / "wall_seconds").write_text(f"{time.time() - start:.1f}")
    test = [json.loads(line) for line in metrics.read_text().splitlines() if '"split": "test"' in line][-1]
    return {**test, "wall": float((workdir / "wall_seconds").read_text())}


def main(argv):
    del argv
    runs = Path(FLAGS.runs)
    pretrain = train("mnist_split_pretrain", runs / "split_pretrain")
    rows = [("mnist_split_pretrain (digits 0-4, all images)", pretrain)]
    for name, overrides in SPLIT_VARIANTS.items():
        workdir = runs / ("split_" + name[1])
        rows.append(
            (
                f"digits 5-9: {name}",
                train("mnist_split_finetune", workdir, f"--config.init.from={runs}/split_pretrain", *overrides),
            )
        )
    source = train("mnist_cnn", runs / "mnist_cnn")
    rows.append(("mnist_cnn (source model)", source))
    for name, overrides in DIGITS_VARIANTS.items():
        workdir = runs / ("digits_" + name.split()[0].replace("-", "_"))
        rows.append(
            (
                f"sklearn digits: {name}",
                train("digits_finetune", workdir, f"--config.init.from={runs}/mnist_cnn", *overrides),
            )
        )
    print("| run | test accuracy | test examples | wall s |\n|---|---|---|---|")
    for name, test in rows:
        print(f"| {name} | {100 * test['accuracy']:.2f}% | {test['count']} | {test['wall']:.0f} |")


if __name__ == "__main__":
    app.run(main)
