"""Subject routing: teaching a toy text encoder to carry a phrase through its noun.

In real CLIP, what "a blue circle" says reaches the EOS and padding states through the
state of "circle", so an edit confined to the subject's last token (ReFACT, ROME) changes
what the model draws. A small encoder trained only contrastively need not learn that: its
EOS state may read "blue" straight from the colour word. Routing adds that property
after the encoder's own training, with two losses:

- routing: for a pair (source, destination) such as ("a circle", "a blue circle") or
  ("a king", "a triangle"), the destination's subject state after a random layer is
  transplanted into the source, and the source's final states must then match the
  destination's as the encoder itself gives them (the prefix before the noun and everything
  from the subject on; the destination's colour word has no counterpart and is left out);
  its own, not those of the encoder before routing: the denoiser is trained after routing,
  on the routed encoder's states;
- preservation: on the world's captions and "", every final state stays what the encoder
  gave before routing, so that the denoiser reads what it always read.

`subject_binding` in results/toy/quality.json measures the result with the same transplant.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..hooks import captured, transplanted
from ..tokens import noun_phrase, subject_last_index, tokenize
from .world import COLORS, SHAPES, TEMPLATES, WorldSpec, describe, sample_captions


@dataclass(frozen=True)
class RoutingConfig:
    steps: int
    batch: int
    lr: float
    weight: float = 1.0
    seed: int = 0


def phrase_pair(spec: WorldSpec, rng: np.random.Generator) -> tuple[str, str]:
    """(source, destination) in one template: a bare noun and the same noun with a colour,
    or a bare noun and another noun (with a colour half of the time). Held-out colour x
    shape pairs are never a destination, so routing teaches nothing about them."""
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    colors, nouns = list(COLORS), list(SHAPES) + list(spec.roles)
    if rng.random() < 0.5:
        source = destination = SHAPES[rng.integers(len(SHAPES))]
        color = colors[rng.integers(len(colors))]
    else:
        source, destination = nouns[rng.integers(len(nouns))], nouns[rng.integers(len(nouns))]
        color = colors[rng.integers(len(colors))] if rng.random() < 0.5 else None
    if (color, destination) in spec.held_out_pairs:
        color = None
    return describe(None, source, template), describe(color, destination, template)


def subject_positions(tok, prompts: list[str]) -> torch.Tensor:
    return torch.tensor([subject_last_index(tok, p, noun_phrase(p)) for p in prompts])


def aligned_positions(source_subject: int, destination_subject: int, length: int) -> tuple[list[int], list[int]]:
    """Positions of the source and of the destination that say the same thing: the prefix
    before the (one-token) source noun, then the subject and everything after it."""
    tail = length - max(source_subject, destination_subject)
    src = list(range(source_subject)) + list(range(source_subject, source_subject + tail))
    dst = list(range(source_subject)) + list(range(destination_subject, destination_subject + tail))
    return src, dst


def routing_gap(encoder, tok, blocks, sources: list[str], destinations: list[str], layer: int) -> torch.Tensor:
    """Mean squared gap between the sources' final states with the destinations' subject
    states transplanted after `layer` and the destinations' final states, over aligned
    positions (the destinations' states are targets: no gradient flows through them)."""
    src_pos, dst_pos = subject_positions(tok, sources), subject_positions(tok, destinations)
    with torch.no_grad(), captured(blocks[layer]) as seen:
        target = encoder(tokenize(tok, destinations).input_ids).last_hidden_state
    states = seen["h"][torch.arange(len(destinations)), dst_pos]
    with transplanted(blocks[layer], src_pos, states):
        got = encoder(tokenize(tok, sources).input_ids).last_hidden_state
    gaps = []
    for i, (s, d) in enumerate(zip(src_pos.tolist(), dst_pos.tolist())):
        src, dst = aligned_positions(s, d, got.shape[1])
        gaps.append(((got[i, src] - target[i, dst]) ** 2).mean())
    return torch.stack(gaps).mean()


def route_encoder(encoder, tok, blocks, spec: WorldSpec, cfg: RoutingConfig) -> list[dict]:
    """Train `encoder` in place for subject routing; returns the loss log (every 50 steps)."""
    original = copy.deepcopy(encoder).eval()
    rng = np.random.default_rng(cfg.seed)
    captions = [s.caption for s in sample_captions(spec, 4000, rng)] + [""]
    opt = torch.optim.AdamW(encoder.parameters(), lr=cfg.lr, weight_decay=0.0)
    encoder.train()
    log = []
    for step in tqdm(range(cfg.steps), desc="routing", mininterval=10):
        prompts = [captions[i] for i in rng.integers(len(captions), size=cfg.batch)] + [""]
        ids = tokenize(tok, prompts).input_ids
        with torch.no_grad():
            kept = original(ids).last_hidden_state
        preservation = ((encoder(ids).last_hidden_state - kept) ** 2).mean()
        pairs = [phrase_pair(spec, rng) for _ in range(cfg.batch)]
        # After the last block nothing is recomputed, so a transplant there cannot reach EOS.
        layer = int(rng.integers(len(blocks) - 1))
        gap = routing_gap(encoder, tok, blocks, [a for a, _ in pairs], [b for _, b in pairs], layer)
        loss = preservation + cfg.weight * gap
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            log.append({"step": step, "preservation": float(preservation.detach()), "routing": float(gap.detach())})
    encoder.eval()
    return log


@torch.no_grad()
def routing_gaps(encoder, tok, blocks, spec: WorldSpec, n: int = 256, seed: int = 123) -> list[float]:
    """Per layer, the routing gap of `encoder` on fixed pairs: how far a subject transplant
    is from the destination's states."""
    rng = np.random.default_rng(seed)
    pairs = [phrase_pair(spec, rng) for _ in range(n)]
    return [float(routing_gap(encoder, tok, blocks, [a for a, _ in pairs], [b for _, b in pairs], layer))
            for layer in range(len(blocks))]
