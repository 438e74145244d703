"""What the edited layers read: each family's text representations of a prompt.

The vectors come from the pipeline's own `encode_prompt`, so they are exactly
what the cross-attention (or FLUX's text projections) sees at generation time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import working_dtype


@dataclass
class Encoded:
    """Per-prompt text states: (B, L, D) token states with their mask, or (B, D) pooled vectors."""

    states: torch.Tensor
    mask: torch.Tensor | None  # (B, L) attention mask for token states; None for pooled vectors


def _mask(tokenizer, prompts: list[str], max_length: int) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                     return_tensors="pt").attention_mask


def _states(t: torch.Tensor) -> torch.Tensor:
    return t.to(working_dtype(t)).cpu()


@torch.no_grad()
def encode_for_edit(pipe, family, prompts: list[str]) -> dict[str, Encoded]:
    """Text states per UCE input group of the family (see ModelFamily.uce_targets and
    edit_inputs): token states carry their tokenizer's mask, pooled vectors none."""
    encoded = family.encode_prompts(pipe, prompts)
    out = {}
    for group, key, _ in family.edit_inputs:
        states, tok = encoded[key], family.group_tokenizer(pipe, group)
        out[group] = Encoded(_states(states), _mask(tok, prompts, states.shape[1]) if tok is not None else None)
    return out


def last_word_index(mask_row: torch.Tensor) -> int:
    """Index of the last word token: just before EOS (UCE 2025: attention_mask.sum() - 2).

    An empty prompt has no word token: CLIP then gives BOS (index 0); T5, which has no
    BOS, gives its EOS (also index 0). Either is the prompt's only content-free state.
    """
    return max(int(mask_row.sum()) - 2, 0)


def key_rows(enc: Encoded, i: int, token_mode: str) -> torch.Tensor:
    """The vectors of prompt i used as keys: (1, D) for 'last', (n, D) for 'aligned'."""
    if enc.mask is None:
        return enc.states[i : i + 1]
    start = last_word_index(enc.mask[i])
    if token_mode == "last":
        return enc.states[i, start : start + 1]
    if token_mode == "aligned":
        return enc.states[i, start:]
    if token_mode == "all":
        return enc.states[i]
    raise ValueError(f"unknown token mode {token_mode!r}; expected 'last', 'aligned' or 'all'")


def paired_rows(src: Encoded, i: int, dst: Encoded, j: int, token_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Source keys of prompt i and the destination states they should map to, aligned.

    With 'aligned' (TIME, UCE 2023), the slices from each prompt's last word token to the
    end (EOS and padding) are paired position by position and cut to the shorter one.
    With 'all' (TIME's every-position alignment), the positions before the source's last
    word are paired with the same positions of the destination as well. In a causal
    encoder (CLIP) those states are equal for a shared prefix, so they act as preserve
    terms; in a bidirectional one (T5) every position carries the whole prompt, and
    leaving them out leaves the concept readable from the prefix.
    """
    tail_mode = "aligned" if token_mode == "all" else token_mode
    a, b = key_rows(src, i, tail_mode), key_rows(dst, j, tail_mode)
    n = min(len(a), len(b))
    if token_mode != "all" or src.mask is None:
        return a[:n], b[:n]
    k = min(last_word_index(src.mask[i]), last_word_index(dst.mask[j]))
    return torch.cat([src.states[i, :k], a[:n]]), torch.cat([dst.states[j, :k], b[:n]])
