"""Run every benchmark side by side and print a markdown table: `python -m benchmarks.run [options]`.

    python -m benchmarks.run                       # the full suite, ~45 min on a 2-core CPU
    python -m benchmarks.run --quick               # short runs, 1 repeat: checks that everything works (~5 min)
    python -m benchmarks.run --only loop,mnist --repeats 3 --json results.json

Each arm (jaxdl, a bare jax.jit loop, PyTorch) runs in a fresh process of its own, one after the other; within a
repeat the arms of a group run back to back, in the group's order and reversed every other repeat. Arms that a
figure compares are listed next to each other, so they run seconds apart and each goes first as often as the
other: on a VM whose speed drifts by 10-20% within minutes, arms a few minutes apart gave ratios that the drift
decided (BUILD_NOTES, issue 8). Ratios are medians of the per-repeat ratios. Numerical checks that the two
sides compute the same thing (benchmarks/checks.py) run first.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common, figures


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    module: str  # benchmarks.jax_workers or benchmarks.torch_workers
    args: tuple[str, ...]
    # Expected duration on a quiet 2-core machine, for the time estimate: the Xeon 6/207's arms in BUILD_NOTES'
    # suite AA (the AMD EPYC VMs of the first sessions took up to twice as long).
    seconds: float
    primed: bool = False  # run once, untimed, before the repeats (fills the arm's cache of compiled programs)


@dataclasses.dataclass(frozen=True)
class Group:
    name: str
    what: str
    arms: tuple[Arm, ...]
    repeats: int


def groups(quick: bool, repeats: int, gpt_repeats: int, indices: Path, torch_threads: int) -> dict[str, Group]:
    """`indices`: the suite's scratch directory (batch orders, the warm arm's compilation cache)."""
    jax_w, torch_w = "benchmarks.jax_workers", "benchmarks.torch_workers"
    threads = f"--threads={torch_threads}"
    mnist_idx, gpt_idx = f"--indices={indices / 'mnist.npy'}", f"--indices={indices / 'gpt.npy'}"
    loop = ["--steps=150"] if quick else ["--steps=400"]
    mnist = ["--steps=300", "--eval_every=100"] if quick else ["--eval_every=50"]
    gpt = ["--steps=200", "--eval_every=100"] if quick else ["--eval_every=250"]
    ckpt = ["--steps=200", "--epochs=2"] if quick else ["--epochs=2"]
    warm_cache = f"--compilation_cache={indices / 'xla-cache'}"  # the warm arms' (a later run's) compiled programs
    scale = 0.3 if quick else 1.0
    return {
        "peak": Group(
            "peak",
            "fp32 matmul peak (MFU denominator)",
            (Arm("jax", jax_w, ("peak",), 10), Arm("torch", torch_w, ("peak", threads), 8)),
            1,
        ),
        "loop": Group(
            "loop",
            "benchmarks 1, 2, 5 (CNN), 6: mnist_cnn train steps",
            (
                # jaxdl beside the bare loop (figure 1) and the synthetic-batch run (6); 1b's and 2's arms one further.
                Arm("bare_default_xla", jax_w, ("bare", "--default_xla", mnist_idx, *loop), 8 * scale + 4),
                Arm("bare", jax_w, ("bare", mnist_idx, *loop), 6 * scale + 4),
                Arm("jaxdl", jax_w, ("loop", *loop), 8 * scale + 4),
                Arm("jaxdl_synthetic", jax_w, ("loop", "--synthetic", *loop), 8 * scale + 4),
                Arm("steps", jax_w, ("steps", "--steps=10", "--rounds=30" if not quick else "--rounds=4"), 16),
                Arm("loops", jax_w, ("loops", mnist_idx, *loop, "--rounds=3" if not quick else "--rounds=1"), 48),
                Arm("torch", torch_w, ("cnn", mnist_idx, threads, *loop), 6 * scale + 3),
            ),
            repeats,
        ),
        "mnist": Group(
            "mnist",
            "benchmark 3: time to 99.0% / 99.2% test accuracy",
            (
                # A user's first run (its cache of compiled programs empty) and the runs after it (filled).
                Arm("jaxdl", jax_w, ("mnist_tta", "--compilation_cache=fresh", *mnist), 21 if not quick else 20),
                Arm(
                    "jaxdl_warm",
                    jax_w,
                    ("mnist_tta", warm_cache, *mnist),
                    20 if not quick else 17,
                    primed=True,
                ),
                Arm("torch", torch_w, ("cnn", mnist_idx, threads, *mnist), 39 if not quick else 15),
            ),
            repeats,
        ),
        "gpt": Group(
            "gpt",
            "benchmarks 4, 5 (GPT): shakespeare_gpt_reference",
            (
                Arm("jaxdl_warm", jax_w, ("gpt", warm_cache, *gpt), 56 if not quick else 25, primed=True),
                Arm("jaxdl", jax_w, ("gpt", *gpt), 58 if not quick else 30),  # beside PyTorch: 4b
                Arm("torch", torch_w, ("gpt", gpt_idx, threads, *gpt), 65 if not quick else 30),
            ),
            gpt_repeats,
        ),
        "gpt_bf16": Group(
            "gpt_bf16",
            "benchmark 4 in mixed precision: jaxdl matmul_dtype=bfloat16, PyTorch bfloat16 autocast",
            (
                Arm(
                    "jaxdl_warm",
                    jax_w,
                    ("gpt", "--matmul_dtype=bfloat16", warm_cache, *gpt),
                    68 if not quick else 25,
                    primed=True,
                ),
                Arm("jaxdl", jax_w, ("gpt", "--matmul_dtype=bfloat16", *gpt), 72 if not quick else 30),
                Arm("torch", torch_w, ("gpt", "--autocast", gpt_idx, threads, *gpt), 115 if not quick else 30),
            ),
            gpt_repeats,
        ),
        "checkpoint": Group(
            "checkpoint",
            "benchmark 7: checkpoint every epoch vs none",
            (
                Arm("every_epoch", jax_w, ("checkpoint", "--checkpoints", *ckpt), 17 if not quick else 12),
                Arm("none", jax_w, ("checkpoint", *ckpt), 17 if not quick else 12),
            ),
            repeats,
        ),
    }


def machine() -> dict:
    """CPU model, cores, memory, load and library versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    field = lambda name: next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith(name)), "")
    flags = field("flags").split()
    versions = {}
    for package in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "torch", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "missing"
    memory = next((ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in ln), "0")
    return {
        "cpu": field("model name") or platform.processor(),
        "cpu_family_model": f"{field('cpu family')}/{field('model')}",
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": any(f.startswith("amx") for f in flags),
        "memory_gib": round(int(memory) / 2**20, 1),
        "python": platform.python_version(),
        "versions": versions,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def run_arm(group: Group, arm: Arm) -> dict:
    """One arm in a fresh process; its RESULT line, or an error with the tail of its output."""
    env = {**os.environ, "JAXDL_DATA_DIR": str(common.data_dir()), "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", arm.module, *arm.args], cwd=common.ROOT, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    result = common.read_result(done.stdout)
    load = os.getloadavg()[0]
    if done.returncode or result is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-8:]
        print(
            f"  {group.name}/{arm.name}: FAILED (exit {done.returncode}):\n    " + "\n    ".join(tail), file=sys.stderr
        )
        return {"error": tail, "wall": seconds, "load": load}
    print(f"  {group.name}/{arm.name}: {seconds:.0f} s (load {load:.1f})", file=sys.stderr, flush=True)
    return {**result, "wall": seconds, "load": load}


def prepare(directory: Path, skip_checks: bool) -> bool:
    """Index batches for the workers (and the numerical checks unless skipped); False if a check failed."""
    command = [sys.executable, "-m", "benchmarks.checks", f"--indices={directory}"]
    if skip_checks:
        command.append("--indices_only")
    env = {**os.environ, "JAXDL_DATA_DIR": str(common.data_dir())}
    done = subprocess.run(command, cwd=common.ROOT, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if not line.startswith(common.RESULT_PREFIX):
            print("  " + line, file=sys.stderr)
    if done.returncode:
        print(done.stderr[-2000:], file=sys.stderr)
    return done.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description="jaxdl's side-by-side benchmarks; prints a markdown table.")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of every group but gpt (median taken)")
    parser.add_argument("--gpt_repeats", type=int, default=3, help="repeats of the 2000-step GPT runs")
    parser.add_argument(
        "--only", default="", help="comma-separated groups: peak, loop, mnist, gpt, gpt_bf16, checkpoint"
    )
    parser.add_argument("--quick", action="store_true", help="short runs, one repeat: does everything work?")
    parser.add_argument("--skip_checks", action="store_true", help="skip the numerical equivalence checks")
    parser.add_argument("--json", default="", help="also write every raw result to this file")
    parser.add_argument(
        "--torch_threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: cores)"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.gpt_repeats = 1, 1
    started = time.perf_counter()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="jaxdl-bench-") as tmp:
        plan = groups(args.quick, args.repeats, args.gpt_repeats, Path(tmp), args.torch_threads)
        chosen = [g.strip() for g in args.only.split(",") if g.strip()] or list(plan)
        unknown = sorted(set(chosen) - set(plan))
        if unknown:
            parser.error(f"--only: unknown group(s) {', '.join(unknown)}; choose from {', '.join(plan)}")
        if "peak" not in chosen and any(g in chosen for g in ("loop", "gpt", "gpt_bf16")):
            chosen.insert(0, "peak")  # MFU needs it
        estimate = 25 + sum(
            (g.repeats * sum(a.seconds for a in g.arms) + sum(a.seconds for a in g.arms if a.primed))
            for n, g in plan.items()
            if n in chosen
        )
        print(f"machine: {info['cpu']}, {info['cores']} cores; estimated {estimate / 60:.0f} min", file=sys.stderr)
        load_before = os.getloadavg()
        if not prepare(Path(tmp), args.skip_checks):
            sys.exit("benchmarks: a numerical check failed (above): the two sides do not compute the same thing")
        for group, arm in [(plan[name], arm) for name in chosen for arm in plan[name].arms if arm.primed]:
            print(f"priming {group.name}/{arm.name}", file=sys.stderr, flush=True)
            run_arm(group, arm)
        results = {name: {arm.name: [] for arm in plan[name].arms} for name in chosen}
        for repeat in range(max(plan[name].repeats for name in chosen)):
            for name in chosen:
                group = plan[name]
                if repeat >= group.repeats:
                    continue
                print(f"repeat {repeat + 1}/{group.repeats}: {group.what}", file=sys.stderr, flush=True)
                arms = group.arms if repeat % 2 == 0 else group.arms[::-1]
                for arm in arms:
                    results[name][arm.name].append(run_arm(group, arm))
    info.update(load_before=load_before, load_after=os.getloadavg(), minutes=(time.perf_counter() - started) / 60)
    info.update(quick=args.quick, repeats=args.repeats, gpt_repeats=args.gpt_repeats, torch_threads=args.torch_threads)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=1))
    print(figures.report(info, results))


if __name__ == "__main__":
    main()
