"""The benchmark suite's own code (benchmarks/, run by `python -m benchmarks.run`, not by the tests): the figures it
derives from the workers' raw results, and the jax workers themselves on a few steps. The jaxdl arms observe the loop
by wrapping functions it looks up at call time (benchmarks.probe.Probe); if the loop stopped calling one of
them, the suite would go on printing figures with that part silently missing. The PyTorch arms need the `bench`
extra and are not run here."""

import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT))  # `benchmarks` is a folder of the project, not an installed package
from benchmarks import common, figures, measures

MACHINE = {
    "cpu": "test CPU",
    "cpu_family_model": "0/0",
    "cores": 2,
    "avx512_bf16": False,
    "memory_gib": 1.0,
    "python": "3",
    "versions": {"jax": "0"},
    "xla_flags": "",
    "load_before": (0.0, 0.0, 0.0),
    "quick": False,
    "repeats": 3,
    "gpt_repeats": 3,
    "minutes": 1.0,
    "torch_threads": 2,
}


def stamps(steps_per_second: float, steps: int = 400, every: int = 50, start: float = 5.0) -> list:
    """Train-line timestamps (step, seconds, data seconds) of a run at a steady rate after a slow first interval."""
    return [(s, start + (s - every) / steps_per_second, 0.0) for s in range(every, steps + 1, every)]


def loop_arm(steps_per_second: float) -> dict:
    return {"train_stamps": stamps(steps_per_second), "step_flops": 1e9, "last_train_loss": 0.1, "load": 2.0}


def row(report: str, row_id: str) -> list[str]:
    """The cells of the report's table row `row_id`."""
    line = next(ln for ln in report.splitlines() if ln.startswith(f"| {row_id} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_rate_counts_the_steady_span_without_its_evaluations():
    result = {
        "train_stamps": [(50, 10.0, 0.0), (100, 11.0, 0.0), (200, 14.0, 0.0)],
        "evals": [{"start": 12.0, "end": 12.5}, {"start": 20.0, "end": 30.0}],  # the second is outside the span
    }
    # Steps 100 -> 200 in 4.0 s, 0.5 s of which evaluating; the first interval (compilation) is left out.
    assert measures.rate(result) == pytest.approx(100 / 2.5)


@pytest.mark.parametrize(
    ("jaxdl_rates", "tax", "verdict"), [((96, 99, 49), 0.98, "pass"), ((90, 95, 99), 0.95, "FAIL")]
)
def test_the_framework_tax_is_the_median_of_ratios_paired_per_repeat(jaxdl_rates, tax, verdict):
    bare_rates = (100, 100, 50)
    runs = {
        "bare": [loop_arm(r) for r in bare_rates],
        "jaxdl": [loop_arm(r) for r in jaxdl_rates],
        "jaxdl_synthetic": [loop_arm(r) for r in jaxdl_rates],
        "torch": [loop_arm(50) for _ in bare_rates],
    }
    report = figures.report(MACHINE, {"loop": runs})
    cells = row(report, "1")
    assert cells[2] == f"{tax:.3f}×"
    assert verdict in cells[4]
    # Images/s against PyTorch is paired the same way: jaxdl's rate over PyTorch's 50 steps/s.
    assert row(report, "2")[2] == f"{np.median(np.array(jaxdl_rates) / 50):.2f}×"


def test_the_steps_share_of_the_tax_is_paired_per_round():
    rounds = {"jaxdl": [0.0110, 0.0120, 0.0300], "bare": [0.0100, 0.0108, 0.0100]}  # one round slowed by the VM
    runs = {
        "bare": [loop_arm(100)],
        "jaxdl": [loop_arm(90)],
        "jaxdl_synthetic": [loop_arm(90)],
        "torch": [loop_arm(50)],
        "steps": [{"seconds_per_step": rounds, "load": 2.0}],
    }
    cells = row(figures.report(MACHINE, {"loop": runs}), "1s")
    assert cells[2] == "0.900×"  # the median of 0.909, 0.900 and 0.333
    assert "(the loop's own share) 1.000×" in cells[5]  # figure 1 is 0.9 too: nothing left for the loop


def test_the_main_threads_cpu_per_step_is_taken_over_the_steady_span():
    # The first interval (compilation, 2.0 s of CPU) is left out, as in `rate`: 0.06 s over steps 100 -> 200.
    result = {"main_cpu_stamps": [(50, 3.0), (100, 5.0), (150, 5.03), (200, 5.06)]}
    assert measures.main_cpu_per_step(result) == pytest.approx(0.06 / 100)
    assert math.isnan(measures.main_cpu_per_step({"train_stamps": stamps(50)}))  # PyTorch's arms have none


def test_the_loops_host_work_is_jaxdls_cpu_per_step_less_the_bare_loops():
    cpu = lambda per_step: [(s, 1.0 + s * per_step) for s in range(50, 401, 50)]
    runs = {
        "bare": [{**loop_arm(100), "main_cpu_stamps": cpu(c)} for c in (0.00028, 0.00027, 0.00100)],
        "jaxdl": [{**loop_arm(100), "main_cpu_stamps": cpu(c)} for c in (0.00048, 0.00050, 0.00047)],
        "jaxdl_synthetic": [loop_arm(100)] * 3,
        "torch": [loop_arm(50)] * 3,
    }
    cells = row(figures.report(MACHINE, {"loop": runs}), "1c")
    assert cells[2] == "+0.200 ms"  # medians: 0.48 - 0.28 ms
    assert "jaxdl 0.480, bare 0.280 ms per step of 10.00 ms" in cells[5]
    del runs["bare"][0]["main_cpu_stamps"], runs["bare"][1]["main_cpu_stamps"], runs["bare"][2]["main_cpu_stamps"]
    assert "| 1c |" not in figures.report(MACHINE, {"loop": runs})  # earlier suites' results: no row


def test_the_alternated_loops_pool_their_pairs_over_repeats():
    runs = {
        "bare": [loop_arm(100)] * 2,
        "jaxdl": [loop_arm(90)] * 2,
        "jaxdl_synthetic": [loop_arm(90)] * 2,
        "torch": [loop_arm(50)] * 2,
        "steps": [{"seconds_per_step": {"jaxdl": [0.0105], "bare": [0.0100]}, "load": 2.0}] * 2,  # 1s: 0.952
        "loops": [
            {"steps_per_sec": {"jaxdl": [93.0, 40.0], "bare": [100.0, 100.0]}, "load": 2.0},  # 0.93, 0.4
            {"steps_per_sec": {"jaxdl": [95.0], "bare": [100.0]}, "load": 2.0},  # 0.95
        ],
    }
    cells = row(figures.report(MACHINE, {"loop": runs}), "1l")
    assert cells[2] == "0.930×"  # the median of the three pairs, not of the repeats' medians (0.665, 0.95)
    assert cells[3:5] == ["≥ 0.97", "**FAIL**"]  # the same target as figure 1's
    assert "3 pairs, per pair 0.400-0.950" in cells[5]
    assert "(the loop's own share) 0.977×" in cells[5]  # 0.93 / 0.952


def test_a_probe_gives_the_loop_its_functions_back(monkeypatch):
    import jaxdl
    from benchmarks import probe
    from jaxdl import data, flops, sharding, training

    def functions():
        return (
            training.evaluate,
            training.Reporter,
            training.Checkpoints.save,
            flops.step_flops,
            data.train_batches,
            sharding.global_batch,
        )

    originals = functions()

    def fail(config, workdir):  # a run that fails after the probe has wrapped the loop's functions
        assert all(a is not b for a, b in zip(functions(), originals, strict=True))
        raise ValueError("failed run")

    monkeypatch.setattr(jaxdl, "train", fail)
    with pytest.raises(ValueError, match="failed run"):
        probe.Probe().train(None, ROOT)
    assert functions() == originals  # so a second probe in the same process wraps jaxdl's own functions


def test_a_failed_arm_leaves_its_repeat_out_and_is_named():
    runs = {
        "bare": [loop_arm(100), {"error": ["Traceback"], "load": 2.0}],
        "jaxdl": [loop_arm(98), loop_arm(10)],  # the second repeat would drag the tax down if it were counted
        "jaxdl_synthetic": [loop_arm(98), loop_arm(10)],
        "torch": [loop_arm(50), loop_arm(50)],
    }
    report = figures.report(MACHINE, {"loop": runs})
    assert row(report, "1")[2] == "0.980×"
    assert "1 repeat(s)" in row(report, "1")[5]
    assert "Failed runs (left out): loop/bare" in report


def gpt_arm(wall_seconds: float, tokens_per_second: float) -> dict:
    """A GPT run whose validation loss first reaches the target at `wall_seconds` of training time."""
    evals = [
        {"step": 250, "loss": 2.4, "train_seconds": wall_seconds / 2, "start": 0.0, "end": 0.0},
        {"step": 500, "loss": common.GPT_TARGET_LOSS - 0.01, "train_seconds": wall_seconds, "start": 0.0, "end": 0.0},
    ]
    return {
        "train_stamps": stamps(tokens_per_second / 768),
        "evals": evals,
        "step_flops": 1e9,
        "tokens_per_step": 768,
        "load": 2.0,
    }


@pytest.mark.parametrize(
    ("jaxdl_walls", "ratio", "verdict"), [((70, 72, 90), 0.72, "pass"), ((85, 90, 95), 0.9, "FAIL")]
)
def test_gpt_wall_time_is_judged_per_repeat_against_pytorch(jaxdl_walls, ratio, verdict):
    runs = {
        "jaxdl": [gpt_arm(w, 15_000) for w in jaxdl_walls],
        "torch": [gpt_arm(100, 12_000) for _ in jaxdl_walls],
    }
    report = figures.report(MACHINE, {"gpt": runs})
    assert row(report, "4b")[2] == f"{ratio:.2f}×"
    assert verdict in row(report, "4b")[4]
    assert row(report, "4a")[2] == "1.25×"


def test_a_run_that_never_reaches_the_target_loss_says_so():
    never = gpt_arm(80, 15_000)
    never["evals"] = never["evals"][:1]  # stopped before reaching the target
    assert measures.gpt_wall(never) == math.inf
    report = figures.report(MACHINE, {"gpt": {"jaxdl": [never], "torch": [gpt_arm(100, 12_000)]}})
    assert "not reached" in row(report, "4b")[5]
    assert "FAIL" in row(report, "4b")[4]


@pytest.mark.parametrize(("slower", "verdict"), [(1.02, "pass"), (1.05, "FAIL")])
def test_checkpoint_cost_compares_the_training_spans(slower, verdict):
    runs = {"every_epoch": [loop_arm(100 / slower)], "none": [loop_arm(100)]}
    cells = row(figures.report(MACHINE, {"checkpoint": runs}), "7")
    assert cells[2] == f"{slower - 1:+.1%}"
    assert verdict in cells[4]


def test_save_cost_in_run_charges_the_intervals_a_save_overlaps():
    # 50-step intervals of 0.5 s; a save at 2.2 s whose call and write make its interval 0.1 s longer.
    times = [1.0, 1.5, 2.0, 2.6, 3.1, 3.6, 4.1, 4.6, 5.1, 5.6]
    result = {"train_stamps": [(50 * (i + 1), t, 0.0) for i, t in enumerate(times)], "saves": [(2.2, 2.25)]}
    # The span from the second stamp is 4.1 s, 0.1 s of it the save's: 0.1 / 4.0 slower than without it.
    assert measures.save_cost_in_run(result, spill=0.3) == pytest.approx(0.1 / 4.0)
    # A write reaching into the next interval charges that one too (here at the run's pace: nothing extra).
    assert measures.save_cost_in_run(result, spill=0.5) == pytest.approx(0.1 / 4.0)
    assert math.isnan(measures.save_cost_in_run({**result, "saves": []}))


def run_worker(*args: str, timeout: float = 300) -> dict:
    """One jax worker arm in a fresh process, as benchmarks.run starts it; its RESULT line."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.jax_workers", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = common.read_result(done.stdout)
    assert result is not None, done.stdout[-3000:]
    return result


def test_the_jaxdl_loop_arm_observes_the_loop():
    result = run_worker("loop", "--steps=150")
    assert [s for s, _, _ in result["train_stamps"]] == [50, 100, 150]  # a stamp per train line
    assert [s for s, _ in result["main_cpu_stamps"]] == [50, 100, 150]
    assert 0 < measures.main_cpu_per_step(result) < 0.005  # ~0.5 ms here: the host work, not the step (~10 ms)
    assert result["data_seconds"] > 0  # the probe saw the batches being made
    assert measures.rate(result) > 0
    # XLA's count of the step jaxdl runs, and the model's (the step compiled with XLA's own convolutions): the
    # one-channel convolution is recomputed where it is used, so the first is the larger (0.932 vs 0.878 GFLOP).
    assert result["model_flops"] < result["step_flops"] < 1.2 * result["model_flops"]
    assert 0 < result["last_train_loss"] < 2.3  # below a uniform guess's log(10) after 150 steps


def batch_order(directory, steps: int) -> str:
    """The --indices argument of the bare loop's arms: a file of `steps` random MNIST batches, as the suite's."""
    np.save(
        directory / "mnist.npy",
        np.random.default_rng(0).integers(0, 60_000, (steps, common.CNN_RECIPE["data.batch_size"])),
    )
    return f"--indices={directory / 'mnist.npy'}"


def test_the_bare_loop_arm_trains_the_same_model(tmp_path):
    result = run_worker("bare", batch_order(tmp_path, 100), "--steps=100")
    assert [s for s, _, _ in result["train_stamps"]] == [50, 100]
    assert [s for s, _ in result["main_cpu_stamps"]] == [50, 100]
    assert result["step_flops"] > 0
    assert 0 < result["last_train_loss"] < 2.3


def test_the_steps_arm_times_both_steps_in_alternating_rounds():
    result = run_worker("steps", "--steps=5", "--rounds=3")
    times = result["seconds_per_step"]
    assert len(times["jaxdl"]) == len(times["bare"]) == 3
    assert all(0 < s < 1 for s in times["jaxdl"] + times["bare"])


def test_the_loops_arm_alternates_whole_runs_in_one_process(tmp_path):
    result = run_worker("loops", batch_order(tmp_path, 150), "--steps=150", "--rounds=2")
    rates = result["steps_per_sec"]
    assert len(rates["jaxdl"]) == len(rates["bare"]) == 2
    assert all(1 < r < 10_000 for r in rates["jaxdl"] + rates["bare"])


def test_the_time_to_accuracy_arm_records_each_evaluation():
    result = run_worker("mnist_tta", "--steps=60", "--eval_every=30")
    assert [e["step"] for e in result["evals"]] == [30, 60]
    first, second = result["evals"]
    assert 0 < first["train_seconds"] < second["train_seconds"]
    assert first["end"] > first["start"] and result["eval_seconds"] > 0
    assert second["accuracy"] > 0.5  # 60 steps of the default recipe; a uniform guess is 0.1
    assert result["stopped_early"] is False  # 99.2% is not reached in 60 steps


def test_the_checkpoint_arm_records_its_saves():
    result = run_worker("checkpoint", "--checkpoints", "--steps=300", "--epochs=2")
    starts = [start for start, _ in result["saves"]]
    stamp_of = dict((s, t) for s, t, _ in result["train_stamps"])
    # Saves at steps 150 (mid-run) and 300 (the end), each after that step's train line.
    assert len(starts) == 2 and stamp_of[150] < starts[0] < stamp_of[200] and starts[1] > stamp_of[300]
    assert not math.isnan(measures.save_cost_in_run(result))
