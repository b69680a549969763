"""Using a trained run: restore its checkpoint, sample from a language model (`--mode=sample`), merge LoRA adapters
into plain weights (`--mode=merge_lora`)."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdl import sampling
from jaxdl.checkpoint import Checkpoints, read_metadata
from jaxdl.data.text import Vocabulary
from jaxdl.errors import UsageError
from jaxdl.state import TrainState
from jaxdl.training import Setup, setup, write_config


def restore(
    config: ml_collections.ConfigDict, workdir: str | Path, step: int | None = None
) -> tuple[Setup, TrainState, dict]:
    """(set-up, state, dataset metadata) of checkpoint `step` (default: the newest) in `workdir`."""
    directory = Path(workdir) / "checkpoints"
    if not directory.is_dir():  # checked first: opening a CheckpointManager would create the directory
        raise UsageError(f"no checkpoints in {workdir}: train first (--mode=train) or point --workdir at a run")
    run = setup(config)
    checkpoints = Checkpoints(directory, keep=config.checkpoint.keep)
    step = checkpoints.latest_step() if step is None else step
    if step is None or step not in checkpoints.manager.all_steps():
        available = checkpoints.manager.all_steps()
        raise UsageError(f"no checkpoint {'' if step is None else step} in {directory} (it has {list(available)})")
    state, _ = checkpoints.restore(run.abstract_state(), step)
    checkpoints.close()
    metadata = read_metadata(directory / str(step))
    return run, state, metadata


def sample(config: ml_collections.ConfigDict, workdir: str | Path) -> str:
    """Generate `config.sample.length` characters after `config.sample.prompt` from the run in `workdir`."""
    run, state, metadata = restore(config, workdir)
    if "vocabulary" not in metadata:
        raise UsageError(f"the run in {workdir} is not a language model (its checkpoint has no vocabulary)")
    vocabulary = Vocabulary(metadata["vocabulary"])  # the one the model was trained with, not the current text's
    options = config.sample
    if not options.prompt:
        raise UsageError("--config.sample.prompt is empty: give at least one character to start from")
    prompt = jnp.asarray(vocabulary.encode(options.prompt))[None, :]
    rng = jax.random.key(config.seed)
    generate = lambda: sampling.generate_windowed(
        run.experiment.model, state.params, prompt, options.length, rng, options.temperature, options.top_k
    )
    jax.block_until_ready(generate())  # compile first, so the rate below is generation alone
    start = time.perf_counter()
    tokens = np.asarray(jax.block_until_ready(generate()))[0]
    seconds = time.perf_counter() - start
    text = vocabulary.decode(tokens[prompt.shape[1] :])
    print(options.prompt + text)
    print(f"[{options.length} characters in {seconds:.2f} s: {options.length / seconds:.0f} tokens/s]", flush=True)
    return text


def merge_lora(config: ml_collections.ConfigDict, workdir: str | Path) -> Path:
    """Write WORKDIR/merged: a run of the un-adapted model whose checkpoint holds the LoRA-merged weights."""
    if not config.lora.rank:
        raise UsageError("--mode=merge_lora needs the LoRA run's config: --config.lora.rank > 0 as it was trained")
    run, state, metadata = restore(config, workdir)
    plain = config.copy_and_resolve_references()
    plain.lora.rank = 0
    plain.init["from"], plain.init.skip = "", ()
    plain_run = setup(plain)
    fresh = jax.jit(plain_run.init_state, out_shardings=plain_run.state_sharding)(jax.random.key(0))
    merged_params = jax.jit(run.experiment.model.merge, out_shardings=plain_run.state_sharding.params)(state.params)
    merged = fresh.replace(step=state.step, params=merged_params, model_state=state.model_state)
    target = Path(workdir) / "merged"
    target.mkdir(parents=True, exist_ok=True)
    write_config(plain, target)
    store = Checkpoints(target / "checkpoints", keep=1)
    store.save(merged, {}, metadata)
    store.close()
    print(f"merged LoRA adapters into {target} (step {int(np.asarray(state.step))})")
    return target
