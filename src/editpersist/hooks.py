"""Reading and overwriting a block's output states while a model runs: what the subject probe
transplants and what the toy world's routing trains through, done one way for both."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch


def block_output(output) -> torch.Tensor:
    """The hidden states of a block's output (transformers blocks return tuples, T5's too)."""
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def captured(block: torch.nn.Module) -> Iterator[dict]:
    """While active, `seen["h"]` is the block's latest output states (detached)."""
    seen = {}
    handle = block.register_forward_hook(lambda mod, args, out: seen.__setitem__("h", block_output(out).detach()))
    try:
        yield seen
    finally:
        handle.remove()


@contextmanager
def transplanted(block: torch.nn.Module, positions: int | torch.Tensor, states: torch.Tensor,
                 rows: Callable[[], torch.Tensor] | None = None):
    """While active, the block's output at `positions` is `states`: one position and state for
    every prompt it encodes (an int and a vector; `rows()`, if given, picks the rows of the
    current batch to change), or one per row (a tensor of positions and a matrix of states)."""
    if rows is not None and not isinstance(positions, int):
        raise ValueError("transplanted: `rows` selects rows for one shared position, not per-row positions")

    def hook(mod, args, output):
        hidden = block_output(output).clone()
        if isinstance(positions, int):
            hidden[slice(None) if rows is None else rows(), positions] = states.to(hidden.dtype)
        else:
            hidden[torch.arange(len(positions)), positions] = states.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def matching_rows(encoder: torch.nn.Module, ids: torch.Tensor) -> Iterator[Callable[[], torch.Tensor]]:
    """While active, the callable it yields says which rows of the encoder's current batch
    begin with the token ids `ids` (the pipelines pass input ids as the first argument)."""
    seen, n = {}, len(ids)

    def pre_hook(mod, args, kwargs):
        x = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        if x.shape[1] < n:  # too short to hold the prompt: no row matches
            seen["rows"] = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        else:
            seen["rows"] = (x[:, :n] == ids.to(x.device)).all(1)

    handle = encoder.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield lambda: seen["rows"]
    finally:
        handle.remove()
