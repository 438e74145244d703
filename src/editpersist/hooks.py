"""Reading and overwriting a block's output states while a model runs: what the subject probe
transplants and what the toy world's routing trains through, done one way for both."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

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
def transplanted(block: torch.nn.Module, positions: int | torch.Tensor, states: torch.Tensor):
    """While active, the block's output at `positions` is `states`: one position and state for
    every prompt it encodes (an int and a vector), or one per row (a tensor of positions and a
    matrix of states)."""
    rows = slice(None) if isinstance(positions, int) else torch.arange(len(positions))

    def hook(mod, args, output):
        hidden = block_output(output).clone()
        hidden[rows, positions] = states.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
