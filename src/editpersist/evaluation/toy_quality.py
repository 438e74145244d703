"""How good the toy world's models, reader and judge are (results/toy/quality.json)."""

from __future__ import annotations

import numpy as np

from ..families.base import ModelFamily
from ..judges.clip import ClipJudge
from ..metrics.reader_metrics import edited_hits
from ..sampling import SamplingConfig, generate
from ..tasks.cases import EditCase
from ..toy.reader import AttributeReader
from ..toy.render import render_samples
from ..toy.world import COLORS, SHAPES, Sample, WorldSpec, describe
from .subject_probe import layer_count, transplant_all, transplant_sites


def fresh_pair_samples(n: int, rng: np.random.Generator) -> list[Sample]:
    """n renders of uniformly drawn colour x shape pairs, held-out pairs included."""
    colors, shapes = list(COLORS), list(SHAPES)
    out = []
    for _ in range(n):
        c, s = colors[rng.integers(len(colors))], shapes[rng.integers(len(shapes))]
        out.append(Sample(describe(c, s), c, s))
    return out


def reader_accuracy(reader: AttributeReader, n: int, seed: int) -> float:
    samples = fresh_pair_samples(n, np.random.default_rng([seed, 7]))
    reads = reader.read(render_samples(samples, seed=seed + 7))
    return float(np.mean([r["color"] == s.color and r["shape"] == s.shape for r, s in zip(reads, samples)]))


def distractor(sample: Sample, rng: np.random.Generator) -> str:
    """The sample's caption with exactly one attribute (colour or shape) changed."""
    if rng.random() < 0.5:
        other = [c for c in COLORS if c != sample.color]
        return describe(other[rng.integers(len(other))], sample.shape)
    other = [s for s in SHAPES if s != sample.shape]
    return describe(sample.color, other[rng.integers(len(other))])


def judge_two_way_accuracy(judge: ClipJudge, n: int, seed: int) -> float:
    rng = np.random.default_rng([seed, 8])
    samples = fresh_pair_samples(n, rng)
    images = render_samples(samples, seed=seed + 8)
    p = judge.prefer_first(images, [s.caption for s in samples], [distractor(s, rng) for s in samples])
    return float(np.mean(p > 0.5))


def prompt_fidelity(pipe, family: ModelFamily, reader: AttributeReader, spec: WorldSpec, n_per_pair: int,
                    sampling: SamplingConfig, seed: int) -> dict:
    """Generate 'a <colour> <shape>' for every pair and read what came out."""
    pairs = spec.all_pairs()
    prompts = [describe(c, s) for c, s in pairs]
    images, _ = generate(pipe, family, prompts, n_per_pair, sampling, base_seed=seed)
    reads = reader.read(images)
    targets = [p for p in pairs for _ in range(n_per_pair)]
    color_ok = np.array([r["color"] == c for r, (c, _) in zip(reads, targets)])
    shape_ok = np.array([r["shape"] == s for r, (_, s) in zip(reads, targets)])
    both = color_ok & shape_ok
    held = np.array([t in spec.held_out_pairs for t in targets])
    per_pair = {f"{c} {s}": float(both[i * n_per_pair:(i + 1) * n_per_pair].mean()) for i, (c, s) in enumerate(pairs)}
    return {
        "color_acc": float(color_ok.mean()),
        "shape_acc": float(shape_ok.mean()),
        "prompt_fidelity": float(both.mean()),
        "prompt_fidelity_trained_pairs": float(both[~held].mean()),
        "prompt_fidelity_held_out_pairs": float(both[held].mean()) if held.any() else None,
        "per_pair": per_pair,
        "n_images": int(len(images)),
    }, images


def _edit_share(pipe, family: ModelFamily, reader: AttributeReader, case: EditCase, prompt: str, n: int,
                sampling: SamplingConfig, seed: int) -> float:
    images, _ = generate(pipe, family, [prompt], n, sampling, base_seed=seed)
    return float(np.mean(edited_hits(case, case.source, reader.read(images))))


def subject_binding(pipe, family: ModelFamily, reader: AttributeReader, cases: list[EditCase], n: int,
                    sampling: SamplingConfig, seed: int) -> dict:
    """Per replace-edit case: the share of the source prompt's images that show the edit when the
    destination's subject state is transplanted after each layer (see evaluation/subject_probe.py),
    beside the unedited source (the floor) and the destination prompt itself (the ceiling)."""
    out = {}
    for case in cases:
        (request,) = case.requests
        row = {
            "source": request.source, "destination": request.target,
            "unedited": _edit_share(pipe, family, reader, case, request.source, n, sampling, seed),
            "destination_prompt": _edit_share(pipe, family, reader, case, request.target, n, sampling, seed),
            "transplant_after_layer": {},
        }
        for layer in range(layer_count(pipe, family)):
            with transplant_all(transplant_sites(pipe, family, request.source, request.target, layer)):
                share = _edit_share(pipe, family, reader, case, request.source, n, sampling, seed)
            row["transplant_after_layer"][str(layer)] = share
        row["n_images"] = n
        out[case.name] = row
    return out
