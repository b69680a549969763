"""Character-level text: a vocabulary built from the text, and windows of `context` characters.

Training samples windows at every start position (shuffled by the pipeline: random windows, each once per epoch);
validation is a fixed, seeded set of windows from the held-out tail, so its loss is comparable across runs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from jaxdl.data.sources import Batch
from jaxdl.errors import UsageError


def default_path() -> str:
    return str(Path(os.environ.get("JAXDL_DATA_DIR", "data")) / "tinyshakespeare" / "input.txt")


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"text file {path} not found: set --config.data.path or $JAXDL_DATA_DIR") from None
    except UnicodeDecodeError as e:
        raise UsageError(
            f"{path} is not UTF-8 text (byte {e.start}); convert it or point --config.data.path elsewhere"
        ) from None


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The characters of a text, sorted; a character's id is its position."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise UsageError(f"characters {''.join(unknown)!r} are not in the model's vocabulary of {len(self)}")
        return np.array([index[c] for c in text], np.int32)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


@dataclasses.dataclass(frozen=True)
class Windows:
    """Windows of `context` tokens: inputs tokens[s : s+context], targets shifted by one. `starts=None` means
    every start position; otherwise the given ones."""

    tokens: np.ndarray
    context: int
    starts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.tokens) - self.context if self.starts is None else len(self.starts)

    def take(self, indices: np.ndarray) -> Batch:
        starts = indices if self.starts is None else self.starts[indices]
        positions = starts[:, None] + np.arange(self.context + 1)
        chunk = self.tokens[positions]
        return {"inputs": chunk[:, :-1], "targets": chunk[:, 1:]}


def split_windows(
    tokens: np.ndarray, context: int, train_fraction: float, validation_windows: int, seed: int
) -> tuple[Windows, Windows]:
    """(train, validation): the first `train_fraction` of the tokens, and seeded windows from the rest."""
    cut = int(len(tokens) * train_fraction)
    train, held_out = tokens[:cut], tokens[cut:]
    if len(train) <= context or len(held_out) <= context:
        raise UsageError(
            f"the text has {len(tokens)} characters: too short for windows of {context} in both splits; "
            "use a longer text or a smaller --config.model.context"
        )
    starts = np.random.default_rng(seed).integers(0, len(held_out) - context, validation_windows)
    return Windows(train, context), Windows(held_out, context, starts)
