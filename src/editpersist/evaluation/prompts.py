"""Prompt sets: which prompts a state's images are generated for, and what each is used for.

A prompt set is named `all` (every edit case of the grid plus the quality captions; used for
states shared by all edits: base and base_ft) or `<task>.<edit>` (one case plus the quality
captions; used for states that belong to one edit).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..tasks.cases import EditCase, Probe

# The metric each task's persistence is judged by first (its "primary" metric).
PRIMARY = {"appearance": "efficacy", "role": "efficacy", "debias": "debias_score", "unsafe": "unsafe_rate"}


def case_key(case: EditCase) -> str:
    return f"{case.task}.{case.name}"


def case_probes(case: EditCase) -> list[tuple[str, Probe]]:
    """(role, probe) for every prompt the case is evaluated on; "target" is not an edit metric's
    (see EditCase.target)."""
    return ([("source", case.source)] + [("positive", p) for p in case.positives]
            + [("negative", p) for p in case.negatives] + [("preserved", p) for p in case.preserved]
            + ([("target", case.target)] if case.target else []))


def probe_counts(n_source: int, n_per_prompt: int, n_check: int | None = None) -> dict[str, int]:
    """Images per prompt of each probe role of `case_probes`: the source's count, the target's
    (`n_check`, see images_per_check; default n_per_prompt), and one count for every other role
    (a prompt the edit is fitted on gets the source's: probe_image_count)."""
    return {"source": n_source, "positive": n_per_prompt, "negative": n_per_prompt, "preserved": n_per_prompt,
            "target": n_per_prompt if n_check is None else n_check}


def images_per_check(evaluation: dict) -> int:
    """Images of the prompts that decide whether a fine-tune seed stays in its cell (the subject
    prompt, the edit's target prompt): `evaluation.images_per_check`, else images_per_prompt."""
    return evaluation.get("images_per_check") or evaluation["images_per_prompt"]


def fitted_prompts(case: EditCase) -> frozenset[str]:
    """The prompts the edit is fitted on: the source, and every prompt of the case's requests
    (a debias edit balances each phrasing in turn, as the official UCE script does)."""
    return frozenset({case.source.prompt, *(r.source for r in case.requests)})


def probe_image_count(case: EditCase, role: str, probe: Probe, counts: dict[str, int]) -> int:
    """Images generated for one probe: the source count (`counts["source"]`) for a prompt the
    edit is fitted on, the role's count otherwise. A debias score over 10 images a phrasing
    could not tell a balanced model (0.12 expected from sampling alone) from a 0.10 bar."""
    return counts["source"] if probe.prompt in fitted_prompts(case) else counts[role]


@dataclass(frozen=True)
class QualityConfig:
    captions: str = "toy"  # "toy" (every colour x shape caption) or a csv with a `prompt` column
    max_captions: int = 20
    images_per_caption: int = 4
    reference: str = "toy"  # "toy" (ground-truth renders of the captions) or an image folder
    # Inception-v3 weights for fid_inception / kid_inception: a file, "download" (needs
    # allow_download), or None for no Inception metrics (metrics/inception.py).
    inception: str | None = None


def quality_captions(cfg: QualityConfig) -> list[str]:
    """The caption set clip_score and the distances are measured on, for every state."""
    if cfg.captions == "toy":
        from ..toy.world import WorldSpec, describe

        captions = [describe(c, s) for c, s in WorldSpec().all_pairs()]
    else:
        path = Path(cfg.captions)
        if not path.is_file():
            raise ConfigError(f"evaluation.quality.captions: file {path} not found")
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "prompt" not in rows[0]:
            raise ConfigError(f"evaluation.quality.captions: {path} has no `prompt` column")
        captions = [r["prompt"] for r in rows]
    return captions[: cfg.max_captions]


def prompt_set(name: str, cases: dict[str, list[EditCase]]) -> list[EditCase]:
    """The edit cases a prompt set covers."""
    every = [c for task_cases in cases.values() for c in task_cases]
    if name == "all":
        return every
    chosen = [c for c in every if case_key(c) == name]
    if not chosen:
        raise ConfigError(f"prompt set {name!r}: no such edit case (expected 'all' or '<task>.<edit>')")
    return chosen
