"""From the workers' raw results to the figures the issue asks for, and the markdown report.

Definitions beyond those of `benchmarks.measures` (steady steps/s, time to a target, data waiting, checkpoint cost):
- the step's share of the tax (1s): jaxdl's compiled train step and the bare loop's, alternated in rounds of 10
  steps inside one process on the same device-resident batches; the median over rounds of the time ratio.
- figure 1 in one process (1l): whole runs of jaxdl.train (as the `loop` arm) and of the bare loop alternated in
  one process, a few rounds per repeat; the median over all pairs of the steady steps/s ratio. It carries figure
  1's target too: on this project's VMs, runs in separate processes differ by 10-20% for reasons neither side
  controls, which row 1's five ratios cannot average out (BUILD_NOTES, issue 8, tenth session).
- the loop's host work (1c): the CPU time of the main thread per step over the steady span, jaxdl's loop less the
  bare loop's (medians over repeats). Steadier than steps/s on these VMs; it is where figure 1's tax was found.
- mixed precision (group gpt_bf16, rows 4c/4d/5c): jaxdl with `matmul_dtype=bfloat16` (dense layers multiply
  bfloat16 operands into float32 sums) against PyTorch under `torch.autocast("cpu", dtype=torch.bfloat16)`; the
  target of 4b is for the float32 pair, this pair is shown beside it.
- MFU: the model's FLOPs per step × steady steps/s / the fp32 matmul peak, which is the better of jax's and
  PyTorch's 2048² matmul (best of 7). The model's FLOPs are XLA's count of the compiled jaxdl train step; for
  mnist_cnn, of the step compiled with XLA's own convolutions (`model_flops`: XLA counts jaxdl's one-channel
  convolution by the elementwise ops it runs, 6% more).
"""

from __future__ import annotations

import math

from benchmarks.common import CNN_RECIPE, GPT_TARGET_LOSS, MNIST_TARGETS, TARGETS
from benchmarks.measures import (
    INF,
    data_fraction,
    gpt_wall,
    main_cpu_per_step,
    median,
    paired,
    rate,
    save_cost_in_run,
    step_speed,
    time_to,
)


def seconds(value: float) -> str:
    return "not reached" if value == INF else "n/a" if math.isnan(value) else f"{value:.1f} s"


def verdict(value: float, target: float, at_most: bool) -> str:
    if math.isnan(value):
        return "n/a"
    return "pass" if (value <= target if at_most else value >= target) else "**FAIL**"


def report(info: dict, results: dict) -> str:
    rows, work = [], []
    peak = math.nan
    if "peak" in results and paired(results["peak"], "jax", "torch"):
        jax_peak, torch_peak = paired(results["peak"], "jax", "torch")[0]
        peak = max(jax_peak["fp32_flops"], torch_peak["fp32_flops"])
        peak_note = (
            f"fp32 matmul peak {peak / 1e9:.0f} GFLOP/s (jax {jax_peak['fp32_flops'] / 1e9:.0f}, torch "
            f"{torch_peak['fp32_flops'] / 1e9:.0f}); bf16: jax {jax_peak['bf16_flops'] / 1e9:.0f}, torch "
            f"{torch_peak['bf16_flops'] / 1e9:.0f} GFLOP/s"
        )
    else:
        peak_note = "peak not measured"

    if "loop" in results:
        runs = paired(results["loop"], "bare", "jaxdl", "jaxdl_synthetic", "torch")
        bare, jaxdl, synthetic, torch = (median(rate(r[i]) for r in runs) for i in range(4))
        tax = median(rate(j) / rate(b) for b, j, _, _ in runs)
        speed = median(rate(j) / rate(t) for _, j, _, t in runs)
        model_flops = lambda j: j.get("model_flops") or j["step_flops"]  # earlier result files lack model_flops
        flops = median(model_flops(j) for _, j, _, _ in runs)
        mfu = median(model_flops(j) * rate(j) / peak for _, j, _, _ in runs)
        wait = median(data_fraction(j) for _, j, _, _ in runs)
        ab = median(1 - rate(j) / rate(s) for _, j, s, _ in runs)
        n = f"{len(runs)} repeat(s)"
        batch = CNN_RECIPE["data.batch_size"]
        rows.append(
            (
                "1",
                "framework tax: jaxdl / bare jax.jit steps/s (mnist_cnn)",
                f"{tax:.3f}×",
                "≥ 0.97",
                verdict(tax, TARGETS["framework_tax"], False),
                f"jaxdl {jaxdl:.1f}, bare {bare:.1f} steps/s; {n}",
            )
        )
        has_default = "bare_default_xla" in results["loop"]  # result files of earlier suites lack this arm
        default_xla = paired(results["loop"], "bare_default_xla", "jaxdl") if has_default else []
        if default_xla:
            rows.append(
                (
                    "1b",
                    "jaxdl / the bare loop compiled with XLA's default options (jaxdl.compiler's share)",
                    f"{median(rate(j) / rate(b) for b, j in default_xla):.3f}×",
                    "—",
                    "",
                    f"bare, default options {median(rate(b) for b, _ in default_xla):.1f} steps/s",
                )
            )
        in_process = [r for (r,) in paired(results["loop"], "steps")] if "steps" in results["loop"] else []
        if in_process:  # result files of earlier suites lack this arm
            step_ratio = [step_speed(r["seconds_per_step"]) for r in in_process]
            rows.append(
                (
                    "1s",
                    "jaxdl's compiled train step / the bare loop's, steps/s interleaved in one process",
                    f"{median(step_ratio):.3f}×",
                    "—",
                    "",
                    f"per repeat {min(step_ratio):.3f}-{max(step_ratio):.3f}; figure 1 / this (the loop's own share) "
                    f"{tax / median(step_ratio):.3f}×",
                )
            )
        alternated = [r for (r,) in paired(results["loop"], "loops")] if "loops" in results["loop"] else []
        if alternated:  # result files of earlier suites lack this arm
            rates = [r["steps_per_sec"] for r in alternated]
            pairs = [j / b for r in rates for j, b in zip(r["jaxdl"], r["bare"], strict=True)]
            tax_in_process = median(pairs)
            share = f"; / figure 1s (the loop's own share) {tax_in_process / median(step_ratio):.3f}×"
            share = share if in_process else ""
            rows.append(
                (
                    "1l",
                    "figure 1 with the two loops alternated in one process (jaxdl.train / the bare loop, steps/s)",
                    f"{tax_in_process:.3f}×",
                    "≥ 0.97",
                    verdict(tax_in_process, TARGETS["framework_tax"], False),
                    f"{len(pairs)} pairs, per pair {min(pairs):.3f}-{max(pairs):.3f}{share}",
                )
            )
        jaxdl_cpu, bare_cpu = (
            median(main_cpu_per_step(j) for _, j, _, _ in runs),
            median(main_cpu_per_step(b) for b, _, _, _ in runs),
        )
        if not math.isnan(jaxdl_cpu + bare_cpu):  # result files of earlier suites lack the stamps
            rows.append(
                (
                    "1c",
                    "the main thread's CPU per step: jaxdl's loop − the bare loop's (mnist_cnn)",
                    f"{(jaxdl_cpu - bare_cpu) * 1e3:+.3f} ms",
                    "—",
                    "",
                    f"jaxdl {jaxdl_cpu * 1e3:.3f}, bare {bare_cpu * 1e3:.3f} ms per step of {1e3 / jaxdl:.2f} ms; "
                    "on 2 cores it is taken from XLA's compute threads",
                )
            )
        rows.append(
            (
                "2",
                "mnist_cnn images/s: jaxdl / PyTorch",
                f"{speed:.2f}×",
                "≥ 1.2",
                verdict(speed, TARGETS["cnn_throughput"], False),
                f"jaxdl {batch * jaxdl:,.0f}, PyTorch {batch * torch:,.0f} images/s; {n}",
            )
        )
        rows.append(
            (
                "5a",
                "MFU, mnist_cnn train step",
                f"{mfu:.1%}",
                "≥ 45%",
                verdict(mfu, TARGETS["cnn_mfu"], False),
                f"{flops / 1e9:.3f} GFLOP/step (the model's, XLA) × {jaxdl:.1f} steps/s; PyTorch same work: "
                f"{flops * torch / peak:.1%}",
            )
        )
        rows.append(
            (
                "6",
                "input pipeline: step time lost to data (1 − real / synthetic-batch steps/s)",
                f"{ab:.1%}",
                "< 5%",
                "pass" if ab < TARGETS["data_wait"] else "**FAIL**",
                f"synthetic (one batch kept on the device) {synthetic:.1f} steps/s; host time inside next() + "
                f"global_batch {wait:.1%} of the span (overlaps the previous step's compute)",
            )
        )
        for b, j, _, t in runs[:1]:
            work += [
                ("bare jax.jit loop (mnist_cnn)", b["train_stamps"][-1][0], b["step_flops"], b["last_train_loss"]),
                ("jaxdl loop (mnist_cnn)", j["train_stamps"][-1][0], j["step_flops"], j["last_train_loss"]),
                ("PyTorch loop (mnist_cnn)", t["train_stamps"][-1][0], None, t["last_train_loss"]),
            ]

    if "mnist" in results:
        runs = paired(results["mnist"], "jaxdl", "torch")
        for target, key in zip(MNIST_TARGETS, ("time_to_99.0", "time_to_99.2"), strict=True):
            ours = median(time_to(j, "accuracy", target, False) for j, _ in runs)
            theirs = median(time_to(t, "accuracy", target, False) for _, t in runs)
            rows.append(
                (
                    "3",
                    f"mnist_cnn time to {target:.1%} test accuracy (jaxdl, first run: nothing compiled before)",
                    seconds(ours),
                    f"≤ {TARGETS[key]:.0f} s",
                    verdict(ours, TARGETS[key], True),
                    f"PyTorch same recipe: {seconds(theirs)}; {len(runs)} repeat(s)",
                )
            )
        warm = paired(results["mnist"], "jaxdl_warm") if "jaxdl_warm" in results["mnist"] else []
        for target, key in zip(MNIST_TARGETS, ("time_to_99.0", "time_to_99.2"), strict=True) if warm else ():
            ours = median(time_to(w, "accuracy", target, False) for (w,) in warm)
            rows.append(
                (
                    "3w",
                    f"mnist_cnn time to {target:.1%} (jaxdl, a later run: compiled programs loaded from its cache)",
                    seconds(ours),
                    f"≤ {TARGETS[key]:.0f} s",
                    verdict(ours, TARGETS[key], True),
                    f"{len(warm)} repeat(s)",
                )
            )
        for j, t in runs[:1]:
            for name, r in (("jaxdl", j), ("PyTorch", t)):
                curve = ", ".join(f"{e['step']}: {e['accuracy']:.4f}" for e in r["evals"][-4:])
                work.append(
                    (
                        f"{name} mnist_cnn to 99.2% (last evaluations {curve})",
                        r["evals"][-1]["step"],
                        r.get("step_flops"),
                        None,
                    )
                )

    if "gpt" in results:
        rows += gpt_rows(paired(results["gpt"], "jaxdl", "torch"), peak, ("4a", "4b", "5b"), "")
        rows += gpt_warm_row(results["gpt"], "4bw", "")
    if "gpt_bf16" in results:  # mixed precision on both sides: not the target's comparison, shown beside it
        rows += gpt_rows(paired(results["gpt_bf16"], "jaxdl", "torch"), peak, ("4c", "4d", "5c"), BF16)
        rows += gpt_warm_row(results["gpt_bf16"], "4dw", BF16)

    if "checkpoint" in results:
        runs = paired(results["checkpoint"], "every_epoch", "none")
        span = lambda r: r["train_stamps"][-1][1] - r["train_stamps"][1][1]
        cost = median(span(e) / span(n) - 1 for e, n in runs)
        rows.append(
            (
                "7",
                "checkpoint every epoch vs none: extra training time",
                f"{cost:+.1%}",
                "< 3%",
                "n/a" if math.isnan(cost) else "pass" if cost < TARGETS["checkpoint_cost"] else "**FAIL**",
                f"mnist_cnn 2 epochs, async orbax saves; {len(runs)} repeat(s)",
            )
        )
        within = median(save_cost_in_run(e) for e, _ in runs)
        calls = median(end - start for e, _ in runs for start, end in e.get("saves", [])[:-1])  # the last: at exit
        rows.append(
            (
                "7i",
                "the same, estimated inside each checkpointing run (intervals its saves overlap vs its others)",
                "n/a" if math.isnan(within) else f"{within:+.1%}",
                "< 3%",
                "n/a" if math.isnan(within) else "pass" if within < TARGETS["checkpoint_cost"] else "**FAIL**",
                f"a save's call (the step's wait, the finiteness check, handing over to orbax) {calls * 1e3:.0f} ms",
            )
        )
    return render(info, rows, work, peak_note, results)


def render(info: dict, rows: list, work: list, peak_note: str, results: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    # Each arm keeps every core busy, so the 1-minute load average at its end is about the core count by itself;
    # more than that (or a busy machine before the suite started) means something else competed for the CPU.
    arm_loads = [r["load"] for arms in results.values() for rs in arms.values() for r in rs if "load" in r]
    loaded = info["load_before"][0] > 0.5 * info["cores"] or max(arm_loads, default=0.0) > info["cores"] + 1
    lines = [
        "## jaxdl benchmarks" + (" (QUICK: short runs, not the figures)" if info["quick"] else ""),
        "",
        f"Machine: {info['cpu']} (family/model {info['cpu_family_model']}), {info['cores']} cores, "
        f"avx512_bf16 {'yes' if info['avx512_bf16'] else 'no'}, {info['memory_gib']} GiB; Python {info['python']}; "
        f"{versions}; XLA_FLAGS={info['xla_flags'] or '(none)'}.",
        f"{peak_note}. Load average before the suite {info['load_before'][0]:.1f}, after each arm at most "
        f"{max(arm_loads, default=0.0):.1f} (the arm itself: about {info['cores']})"
        + (" — **measured on a loaded machine**" if loaded else "")
        + f". Repeats: {info['repeats']} (GPT {info['gpt_repeats']}); PyTorch threads {info.get('torch_threads')}; "
        f"suite time {info['minutes']:.1f} min.",
        "",
        "| # | figure | value | target | pass | details (medians) |",
        "|---|---|---|---|---|---|",
        *(f"| {' | '.join(str(c) for c in row)} |" for row in sorted(rows, key=lambda r: (int(r[0][0]), r[0]))),
    ]
    if work:
        lines += [
            "",
            "Same work on both sides (first repeat):",
            "",
            "| run | steps | XLA GFLOP/step | train loss, last 50 steps |",
            "|---|---|---|---|",
        ]
        for name, steps, flops, loss in work:
            lines.append(
                f"| {name} | {steps} | {'' if not flops else f'{flops / 1e9:.3f}'} | "
                f"{'' if loss is None else f'{loss:.4f}'} |"
            )
    failed = [f"{g}/{a}" for g, arms in results.items() for a, rs in arms.items() for r in rs if "error" in r]
    if failed:
        lines += ["", f"Failed runs (left out): {', '.join(failed)}"]
    return "\n".join(lines)


BF16 = " (bf16 matmuls, both sides)"


def gpt_rows(runs: list, peak: float, ids: tuple[str, str, str], precision: str) -> list[tuple]:
    """Benchmark 4's rows (tokens/s, wall time to the target loss, MFU) for paired (jaxdl, PyTorch) GPT runs."""
    ours, theirs = median(gpt_wall(j) for j, _ in runs), median(gpt_wall(t) for _, t in runs)
    ratio = median(gpt_wall(j) / gpt_wall(t) for j, t in runs)
    tokens = median(rate(j) * j["tokens_per_step"] for j, _ in runs)
    torch_tokens = median(rate(t) * t["tokens_per_step"] for _, t in runs)
    mfu = median(j["step_flops"] * rate(j) / peak for j, _ in runs)
    losses = (
        "; ".join(f"{r['evals'][-1]['loss']:.4f} at step {r['evals'][-1]['step']}" for r in runs[0]) if runs else ""
    )
    target = ("≤ 0.8", verdict(ratio, TARGETS["gpt_wall"], True)) if not precision else ("—", "")
    return [
        (
            ids[0],
            f"shakespeare_gpt_reference tokens/s: jaxdl / PyTorch{precision}",
            f"{tokens / torch_tokens:.2f}×",
            "—",
            "",
            f"jaxdl {tokens:,.0f}, PyTorch {torch_tokens:,.0f} tokens/s; {len(runs)} repeat(s)",
        ),
        (
            ids[1],
            f"wall time to validation loss ≤ {GPT_TARGET_LOSS}: jaxdl / PyTorch{precision}",
            "n/a" if math.isnan(ratio) else f"{ratio:.2f}×",
            *target,
            f"jaxdl {seconds(ours)}, PyTorch {seconds(theirs)}; last val loss jaxdl, PyTorch: {losses}",
        ),
        (
            ids[2],
            f"MFU, GPT train step{precision}",
            f"{mfu:.1%}",
            "—",
            "",
            f"of the fp32 peak; PyTorch same work: {median(j['step_flops'] * rate(t) / peak for j, t in runs):.1%}",
        ),
    ]


def gpt_warm_row(results: dict, row_id: str, precision: str) -> list[tuple]:
    """Benchmark 4's wall time for a later jaxdl run (compiled programs from its cache) against the same repeats'
    PyTorch runs: what a user's second run of the same config takes. The target row stays the first run's."""
    if "jaxdl_warm" not in results:
        return []
    runs = paired(results, "jaxdl_warm", "torch")
    ours, theirs = median(gpt_wall(w) for w, _ in runs), median(gpt_wall(t) for _, t in runs)
    ratio = median(gpt_wall(w) / gpt_wall(t) for w, t in runs)
    return [
        (
            row_id,
            f"wall time to validation loss ≤ {GPT_TARGET_LOSS}: jaxdl, a later run (compiled programs from its "
            f"cache) / PyTorch{precision}",
            "n/a" if math.isnan(ratio) else f"{ratio:.2f}×",
            "—",
            "",
            f"jaxdl {seconds(ours)}, PyTorch {seconds(theirs)}; {len(runs)} repeat(s)",
        )
    ]
