"""A long job split into chunks: contiguous runs of its work items (a model's generation
directories for scoring, a prompt set's prompts for generation), as even as possible, none
longer than the limit. The chunked run's tables equal the unsplit run's byte for byte; the
workflow's `chunking:` block sets the limits (workflow/rules/common.smk: chunk_limits).

A chunk is named "<i>-of-<n>" (1-based); its files are the whole job's names with
"_chunk-<i>-of-<n>" appended (`images/<model>/<group>/all_chunk-1-of-2`). No prompt set (`all`,
`<task>.<edit>`), state name (editpersist.states) or model name holds a "_", so a chunk's
files never match another rule's outputs, nor theirs a chunk rule's.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Sequence, TypeVar

from .errors import InputError

T = TypeVar("T")
# The `chunk` wildcard's constraint.
CHUNK = r"[1-9][0-9]*-of-[1-9][0-9]*"


def chunk_count(n_items: int, limit: int | None) -> int:
    """Chunks of at most `limit` items that `n_items` items need; 1 without a limit."""
    if limit is None or n_items <= limit:
        return 1
    return math.ceil(n_items / limit)


def fewest_chunks(n_items: int, largest: Callable[[int], float], cap: float) -> int:
    """The fewest chunks (at most one per item) whose largest, `largest(k)` for k chunks, is
    within `cap`; every item alone when even that is not."""
    for k in range(1, n_items + 1):
        if largest(k) <= cap:
            return k
    return max(1, n_items)


def split_evenly(items: Sequence[T], n_chunks: int) -> list[list[T]]:
    """`items` in `n_chunks` contiguous runs, in order, the first ones one item longer where
    the items do not divide evenly (7 items in 3: 3, 2, 2)."""
    size, extra = divmod(len(items), n_chunks)
    out, start = [], 0
    for i in range(n_chunks):
        end = start + size + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


def chunk_name(index: int, count: int) -> str:
    """The `chunk` wildcard of chunk `index` (1-based) of `count`."""
    return f"{index}-of-{count}"


def chunk_names(count: int) -> list[str]:
    return [chunk_name(i, count) for i in range(1, count + 1)]


def parse_chunk(name: str) -> tuple[int, int]:
    """(index, count) of a chunk name; the name must be one chunk_name gives."""
    if not re.fullmatch(CHUNK, name):
        raise InputError(f"{name!r}: not a chunk name (expected '<i>-of-<n>')")
    index, count = (int(x) for x in name.split("-of-"))
    if index > count:
        raise InputError(f"{name!r}: chunk {index} of only {count}")
    return index, count


def chunk_of(items: Sequence[T], name: str) -> list[T]:
    """The items chunk `name` covers (split_evenly)."""
    index, count = parse_chunk(name)
    if count > len(items):
        raise InputError(f"chunk {name!r}: only {len(items)} items to split")
    return split_evenly(items, count)[index - 1]
