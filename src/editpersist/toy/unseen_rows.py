"""Unseen token rows: giving the words no caption uses a trained embedding, as real encoders have.

Real CLIP and T5 were trained on text that uses every row of their vocabulary, so a rare word
such as DreamBooth's "sks" has a learned state that names little. The toy captions use about
twenty words, so the other rows of the toy tokenizers (letters, word pieces, "sks") keep their
random initialisation, and a prompt that contains one is read as noise: toy FLUX draws "a sks
square" as a blue triangle, and a fine-tune that teaches it a subject moves every prompt
(docs/toy-world.md, "Unseen token rows").

This stage trains those rows and nothing else, after the denoiser is trained: fillers (one to
`max_filler` unseen tokens) are inserted at a random point of a training caption, and the
frozen denoiser's prediction on the caption with the filler must match its prediction without
it, on the same noisy latents, as distractor words that do not change the image would teach.
Every other weight is frozen and the rows a caption uses get no gradient, so every caption of
the world keeps its states bit for bit, and with them what the denoiser learnt; the filler's
states differ from the caption's own (the denoiser ignores the difference; a fine-tune can
learn to read it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..training.loop import train_steps


@dataclass(frozen=True)
class UnseenRowsConfig:
    steps: int
    batch: int
    lr: float
    max_filler: int = 3
    seed: int = 0


@dataclass
class EncoderRows:
    """One text encoder's part: its token embedding, every training sample's token ids (padded),
    the ids to train and the first position a filler may take (after a BOS token)."""

    embedding: torch.nn.Embedding
    ids: torch.Tensor
    unseen: list[int]
    eos_id: int
    first: int


def unseen_ids(ids: torch.Tensor, vocab_size: int, special: set[int]) -> list[int]:
    """Token ids of the vocabulary that no row of `ids` contains, special tokens left out
    (padding, EOS, BOS and <unk> have their own roles; a word never encodes to them)."""
    seen = set(torch.unique(ids).tolist()) | set(special)
    return [i for i in range(vocab_size) if i not in seen]


def encoder_rows(embedding: torch.nn.Embedding, tokenizer, ids: torch.Tensor) -> EncoderRows:
    """An encoder's part, from the token ids (padded) of every training sample's caption."""
    bos = tokenizer.bos_token_id
    first = int(bos is not None and bool((ids[:, 0] == bos).all()))
    return EncoderRows(embedding, ids, unseen_ids(ids, len(tokenizer), set(tokenizer.all_special_ids)),
                       tokenizer.eos_token_id, first)


def insert_filler(ids: torch.Tensor, filler: list[int], at: int) -> torch.Tensor:
    """`ids` (one padded row) with `filler` inserted before position `at`; the row keeps its length,
    losing as many padding tokens from its end."""
    k = len(filler)
    return torch.cat([ids[:at], torch.tensor(filler, dtype=ids.dtype), ids[at:len(ids) - k]])


def with_fillers(rows: EncoderRows, idx: torch.Tensor, rng: np.random.Generator,
                 max_filler: int) -> torch.Tensor:
    """The samples `idx`'s ids, each with a filler of 1..max_filler unseen tokens inserted between
    its first content position and its EOS (inclusive: a filler may also end the caption)."""
    out = []
    for row in rows.ids[idx]:
        eos = int((row == rows.eos_id).nonzero()[0])
        k = int(rng.integers(1, max_filler + 1))
        if eos + k >= len(row):
            raise ValueError(f"a caption of {eos + 1} tokens leaves no room for a {k}-token filler in "
                             f"{len(row)} positions: raise the tokenizer's max length or lower max_filler")
        filler = [rows.unseen[i] for i in rng.integers(len(rows.unseen), size=k)]
        out.append(insert_filler(row, filler, int(rng.integers(rows.first, eos + 1))))
    return torch.stack(out)


def only_rows(embedding: torch.nn.Embedding, trained: list[int]):
    """The embedding's weight made trainable, with gradients kept on `trained` rows only, and the
    hook's handle. AdamW without weight decay then leaves every other row exactly as it was (zero
    gradients keep its moments, and so its update, at zero)."""
    mask = torch.zeros(embedding.weight.shape[0], 1)
    mask[trained] = 1.0
    weight = embedding.weight
    weight.requires_grad_(True)
    return weight, weight.register_hook(lambda g: g * mask.to(g))


Predict = Callable[[torch.Tensor, list[torch.Tensor], int], torch.Tensor]


def train_unseen_rows(encoders: list[EncoderRows], predict: Predict, cfg: UnseenRowsConfig) -> dict:
    """Train the unseen rows of `encoders` in place. `predict(idx, ids, noise_seed)` is the frozen
    denoiser's output for samples `idx` whose captions encode to `ids` (one tensor per encoder),
    on noisy latents drawn from `noise_seed`. Each encoder gets its own filler, drawn from its own
    vocabulary (a word the tokenizers split differently has no common unit to insert in both).
    Returns the loss before and after, for the stats."""
    n = len(encoders[0].ids)
    rng = np.random.default_rng(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    was_trainable = [e.embedding.weight.requires_grad for e in encoders]
    params, hooks = zip(*(only_rows(e.embedding, e.unseen) for e in encoders))

    def batch() -> tuple[torch.Tensor, list[torch.Tensor], int]:
        idx = torch.randint(0, n, (cfg.batch,), generator=g)
        return idx, [with_fillers(e, idx, rng, cfg.max_filler) for e in encoders], int(rng.integers(2**31))

    def loss(step: int) -> torch.Tensor:
        idx, filled, noise_seed = batch()
        with torch.no_grad():
            teacher = predict(idx, [e.ids[idx] for e in encoders], noise_seed)
        return ((predict(idx, filled, noise_seed) - teacher) ** 2).mean()

    try:
        with torch.no_grad():
            before = float(loss(-1))
        # No weight decay: it would move the rows every caption uses.
        losses = train_steps(params, loss, cfg.steps, cfg.lr, weight_decay=0.0, warmup=0, grad_clip=None,
                             desc="unseen rows")
    finally:
        for p, hook, trainable in zip(params, hooks, was_trainable):
            p.requires_grad_(trainable)
            hook.remove()
    return {"unseen": [len(e.unseen) for e in encoders], "loss_before": before,
            "loss_after": float(np.mean(losses[-20:]))}
