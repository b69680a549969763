"""Parameters named by their tree path, e.g. "block_0/attention/query/kernel", and selected by glob patterns.

One vocabulary for every config field that picks parameters: the weight-decay exclusions (`optim.no_decay`),
and later frozen layers, skipped restores and LoRA targets. A pattern is an `fnmatch` glob over the whole path:
"*bias" matches every bias, "Conv_0/*" everything in the first conv layer.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import jax


def path_name(path: tuple) -> str:
    """'a/b/c' from a jax tree path of dict keys, sequence indices or attributes."""
    parts = []
    for key in path:
        for attribute in ("key", "idx", "name"):
            if hasattr(key, attribute):
                parts.append(str(getattr(key, attribute)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def select(tree: Any, patterns: Sequence[str]) -> Any:
    """A tree of booleans shaped like `tree`: True where the leaf's path matches one of `patterns`."""
    return jax.tree_util.tree_map_with_path(lambda path, _: matches(path_name(path), patterns), tree)


def names(tree: Any) -> list[str]:
    return [path_name(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]
