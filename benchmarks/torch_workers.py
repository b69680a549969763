"""The PyTorch side of each comparison, one arm per process: `python -m benchmarks.torch_workers ARM ...`.

Same models (benchmarks/torch_models.py), same batches (the index batches grain gives jaxdl, from a .npy file the
driver writes), same recipe: Adam + one-cycle (OneCycleLR set to optax's curve) and ±1 px random shifts for the
CNN; AdamW (β2 0.99, weight decay 0.1 on Linear weights only), gradient clipping 1.0, linear warmup + cosine for the
GPT. Threads = cores. Evaluation time is left out of training time, as on the jax side.
"""

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import common, torch_models


class Clock:
    """Training time: (step, perf_counter) stamps every `every` steps, and evaluations timed separately."""

    def __init__(self, every: int = 50):
        self.every, self.stamps, self.evals, self.eval_seconds = every, [], [], 0.0

    def tick(self, step: int, total: int) -> None:
        if step % self.every == 0 or step == total:
            self.stamps.append((step, time.perf_counter(), 0.0))

    def evaluate(self, step: int, evaluate) -> dict:
        start = time.perf_counter()
        train_seconds = start - common.PROCESS_START - self.eval_seconds
        metrics = evaluate()
        end = time.perf_counter()
        self.eval_seconds += end - start
        self.evals.append({"step": step, "train_seconds": train_seconds, "start": start, "end": end, **metrics})
        return metrics

    def result(self, **extra) -> dict:
        return {
            "train_stamps": self.stamps,
            "evals": self.evals,
            "eval_seconds": self.eval_seconds,
            "process_seconds": common.since_start(),
            "threads": torch.get_num_threads(),
            **extra,
        }


def random_shift(images: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """jaxdl.data.augment.random_shift for NCHW: each image moved by a uniform (dy, dx) in [-1, 1], zero-filled."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    rows = (offsets[:, 0, None] + torch.arange(h))[:, :, None]
    cols = (offsets[:, 1, None] + torch.arange(w))[:, None, :]
    return padded[torch.arange(n)[:, None, None], 0, rows, cols][:, None]


def arm_cnn(args) -> dict:
    """mnist_cnn's recipe for `steps` steps (default: its epochs); with --eval_every, test accuracy at intervals
    and a stop at 99.2%."""
    images, labels = common.mnist_arrays("train")
    test_images, test_labels = common.mnist_arrays("test")
    images, labels = torch.from_numpy(images[:, None].copy()), torch.from_numpy(labels.astype(np.int64))
    test_images = torch.from_numpy(test_images[:, None].astype(np.float32) / 255)
    test_labels = torch.from_numpy(test_labels.astype(np.int64))
    batches = np.load(args.indices)
    recipe = common.CNN_RECIPE
    total = args.steps or recipe["train.num_epochs"] * (len(labels) // batches.shape[1])
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    model = torch_models.CNN()
    peak = recipe["optim.learning_rate"]
    optimizer = torch.optim.Adam(model.parameters(), lr=peak)
    schedule = torch_models.onecycle_schedule(
        optimizer, total, peak, recipe["optim.onecycle_pct_start"], recipe["optim.onecycle_final_div"]
    )
    averaged = torch_models.parameter_average(model, recipe["optim.ema_decay"])  # what is evaluated, if any

    @torch.no_grad()
    def evaluate() -> dict:
        evaluated = model if averaged is None else averaged
        evaluated.eval()
        correct = sum(
            int((evaluated(test_images[i : i + 500]).argmax(-1) == test_labels[i : i + 500]).sum())
            for i in range(0, len(test_labels), 500)
        )
        evaluated.train()
        return {"accuracy": correct / len(test_labels)}

    clock, losses = Clock(), []
    for step in range(1, total + 1):
        index = torch.from_numpy(batches[step - 1])
        inputs = random_shift(images[index].float() / 255, generator)
        loss = F.cross_entropy(model(inputs), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if averaged is not None:
            averaged.update_parameters(model)
        losses.append(loss.detach())
        clock.tick(step, total)
        due = args.eval_every and (step % args.eval_every == 0 or step == total)
        if due and clock.evaluate(step, evaluate)["accuracy"] >= max(common.MNIST_TARGETS):
            break
    last = float(torch.stack(losses[-50:]).mean())
    return clock.result(last_train_loss=last, steps_run=step)


def arm_gpt(args) -> dict:
    """shakespeare_gpt_reference's recipe (2000 steps, batch 12, context 64), validation loss every `eval_every`
    steps, stopping once it is <= the target. `--autocast`: PyTorch's mixed precision (forward passes under
    torch.autocast with bfloat16), the counterpart of jaxdl's matmul_dtype=bfloat16."""
    mixed = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast)
    recipe = common.GPT_RECIPE
    context, steps, peak = 64, args.steps or recipe["train.max_steps"], recipe["optim.learning_rate"]
    warmup, end = recipe["optim.warmup_steps"], recipe["optim.min_learning_rate"]
    train, windows, vocab_size = common.shakespeare_arrays(context, 0.9, 2000, 0)
    windows = torch.from_numpy(windows)
    batches = np.load(args.indices)
    torch.manual_seed(0)
    model = torch_models.GPT(vocab_size, context)
    groups = model.parameter_groups(recipe["optim.weight_decay"])
    optimizer = torch.optim.AdamW(groups, lr=peak, betas=(0.9, recipe["optim.b2"]), eps=1e-8)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: common.warmup_cosine(s, peak, warmup, steps, end) / peak
    )

    @torch.no_grad()
    def evaluate() -> dict:
        model.eval()
        with mixed():
            logits = [(model(w[:, :-1]).float(), w[:, 1:]) for w in windows.split(recipe["data.eval_batch_size"])]
        total = sum(float(F.cross_entropy(y.flatten(0, 1), t.flatten(), reduction="sum")) for y, t in logits)
        model.train()
        return {"loss": total / (len(windows) * context)}

    clock, losses, offsets = Clock(), [], np.arange(context + 1)
    for step in range(1, steps + 1):
        chunk = torch.from_numpy(train[batches[step - 1][:, None] + offsets])
        with mixed():
            logits = model(chunk[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), chunk[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["optim.grad_clip_norm"])
        optimizer.step()
        schedule.step()
        losses.append(loss.detach())
        clock.tick(step, steps)
        due = step % args.eval_every == 0 or step == steps
        if due and clock.evaluate(step, evaluate)["loss"] <= common.GPT_TARGET_LOSS:
            break
    last = float(torch.stack(losses[-50:]).mean())
    return clock.result(last_train_loss=last, steps_run=step, tokens_per_step=batches.shape[1] * context)


def arm_peak(args) -> dict:
    """Best-of FLOP/s of a 2048x2048 matmul in float32 and bfloat16."""
    result = {}
    for name, dtype in (("fp32_flops", torch.float32), ("bf16_flops", torch.bfloat16)):
        a = torch.ones(2048, 2048, dtype=dtype)
        torch.mm(a, a)
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            torch.mm(a, a)
            best = min(best, time.perf_counter() - start)
        result[name] = 2 * 2048**3 / best
    return result


ARMS = {"cnn": arm_cnn, "gpt": arm_gpt, "peak": arm_peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arm", choices=sorted(ARMS))
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--eval_every", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--indices", default="")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--autocast", action="store_true", help="gpt: bfloat16 autocast (mixed precision)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    common.emit(ARMS[args.arm](args))


if __name__ == "__main__":
    main()
