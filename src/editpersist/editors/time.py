"""TIME (Orgad, Kawar and Belinkov, ICCV 2023) as its authors run it (`apply_time.py` and
`train_funcs.train_closed_form` of bahjat-kawar/time-diffusion):

* every token position of the padded source prompt is a constraint: position p's state c_p
  must map to W0 applied to the destination's state at the position paired with p;
* pairing: the source's tokens (BOS and EOS included, "an" read as "a") are found in order in
  the destination (greedy, each after the previous match); positions after the source's EOS
  continue after the destination's EOS; whatever is left maps to the last position;
* per layer W = (lam W0 + sum v c^T)(lam I + sum c c^T)^-1 with lam = 0.1 (no preserve term);
* values and keys (`edit_keys`, the published `--with_to_k` run) of every cross-attention;
* `augment` (the published `--with_augs`): also "A photo of / An image of / A picture of"
  the source, paired with the same of the destination.

The official pairing raises IndexError when the source is not a token subsequence of the
destination ("a circle" -> "a square", every RoAD role edit). Here such a pair is aligned by
substitution: the shared prefix and suffix (BOS and EOS included) pair with themselves, and
the differing middle of the source maps right-aligned onto the destination's middle (its last
token onto the destination's last, any extra source tokens onto the destination middle's first
position, or onto the first suffix token when the destination adds nothing). For pairs the
official code accepts, the result is the official one.
"""

from __future__ import annotations

import time as _time
from dataclasses import asdict, dataclass

import torch

from ..tasks.requests import EditRequest
from .base import BlockConfig, EditContext, EditDelta, EditorMethod, make_sidecar
from .closed_form import apply_transform, shared_transform
from .text_inputs import encode_for_edit

AUGMENTATIONS = ("A photo of ", "An image of ", "A picture of ")


@dataclass(frozen=True)
class TIMEConfig(BlockConfig):
    lam: float = 0.1
    edit_keys: bool = True  # the published run edits to_k as well (--with_to_k)
    augment: bool = False  # the published run's --with_augs


def augmented_pairs(source: str, target: str) -> list[tuple[str, str]]:
    """The official augmentations: a leading 'A' is lower-cased, then each prefix is prepended."""
    def base(text: str) -> str:
        return text if text[0:1] != "A" else "a" + text[1:]

    return [(prefix + base(source), prefix + base(target)) for prefix in AUGMENTATIONS]


def normalised_ids(tok, text: str, length: int) -> list[int]:
    """Token ids with 'an' read as 'a' (the official code does this before pairing)."""
    ids = tok(text, truncation=True, max_length=length).input_ids
    a_id = tok("a", add_special_tokens=False).input_ids[-1]
    return [a_id if tok.decode([t]) == "an" else t for t in ids]


def subsequence_pairs(a: list[int], b: list[int]) -> list[int] | None:
    """For each token of `a`, the position of its in-order match in `b`; None if `a` is not a
    subsequence of `b`."""
    out, j = [], 0
    for token in a:
        while j < len(b) and b[j] != token:
            j += 1
        if j == len(b):
            return None
        out.append(j)
        j += 1
    return out


def substitution_pairs(a: list[int], b: list[int]) -> list[int]:
    """Shared prefix and suffix to themselves; the source's middle right-aligned on the destination's."""
    prefix = 0
    while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(a), len(b)) - prefix and a[-1 - suffix] == b[-1 - suffix]:
        suffix += 1
    middle_a, middle_b = len(a) - prefix - suffix, len(b) - prefix - suffix
    out = list(range(prefix))
    for m in range(middle_a):
        out.append(prefix + max(middle_b - middle_a + m, 0))
    out += [len(b) - suffix + k for k in range(suffix)]
    return out


def pair_positions(a: list[int], b: list[int], length: int) -> list[int]:
    """The destination position paired with each of the `length` source positions."""
    matched = subsequence_pairs(a, b)
    if matched is None:
        matched = substitution_pairs(a, b)
    j = len(b)  # after the destination's EOS, positions continue in step
    out = matched + [min(j + k, length - 1) for k in range(length - len(matched))]
    return out[:length]


class TIME:
    name = "time"

    def __init__(self, cfg: TIMEConfig = TIMEConfig()):
        self.cfg = cfg

    def pairs(self, requests: list[EditRequest]) -> list[tuple[str, str]]:
        out = [(r.source, r.target) for r in requests]
        if self.cfg.augment:
            out += [p for r in requests for p in augmented_pairs(r.source, r.target)]
        return out

    def edit(self, pipe, family, requests: list[EditRequest]) -> EditDelta:
        started = _time.perf_counter()
        bad = [r for r in requests if r.mode != "replace"]
        if bad:
            raise ValueError(f"TIME only replaces concepts; got mode {bad[0].mode!r} for {bad[0].source!r}")
        pairs = self.pairs(requests)
        prompts = sorted({t for pair in pairs for t in pair})
        idx = {p: i for i, p in enumerate(prompts)}
        encoded = encode_for_edit(pipe, family, prompts)
        tensors = {}
        for group, layers in family.uce_groups(pipe).items():
            enc, tok = encoded[group], family.group_tokenizer(pipe, group)
            sources, destinations = [], []
            for old, new in pairs:
                src, dst = enc.states[idx[old]], enc.states[idx[new]]
                if tok is None:  # a pooled vector: one constraint per pair
                    sources.append(src[None])
                    destinations.append(dst[None])
                    continue
                length = src.shape[0]
                positions = pair_positions(normalised_ids(tok, old, length), normalised_ids(tok, new, length), length)
                sources.append(src)
                destinations.append(dst[positions])
            C, D = torch.cat(sources), torch.cat(destinations)
            T = shared_transform(C, D, C[:0], self.cfg.lam, 1.0, 0.0)
            chosen = {f"{k}.weight": m.weight.detach() for k, m in layers.items()
                      if self.cfg.edit_keys or ".to_k" not in k}
            tensors.update(apply_transform(chosen, T))
        return EditDelta(tensors, make_sidecar(self.name, asdict(self.cfg), sorted(tensors), requests, started))


def parse(block: dict) -> TIMEConfig:
    return TIMEConfig.from_block(block)


def build(block: dict, ctx: EditContext) -> TIME:
    return TIME(parse(block))


# A closed-form solve like UCE's (assumed 5 s on a GPU).
METHOD = EditorMethod("time", modes=("replace",), build=build, parse=parse, reference_gpu_s=5.0)
