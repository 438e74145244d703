"""The metrics of the persistence table, each computed from a (prompts x images) grid.

Each metric names the probe roles its images come from and how a grid turns into one number;
every reducer works on a whole stack of bootstrap replicates [B, P, N] at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..tasks.cases import EditCase
from .fid import FrechetReference
from .kid import KernelReference


@dataclass(frozen=True)
class Metric:
    name: str
    roles: tuple[str, ...]  # probe roles whose images the metric reads
    kind: str  # "share": share of images that count; "debias": mean |ratio - desired|;
    # "mean": mean of a per-image score; "fid"/"kid": Fréchet / kernel distance of the images'
    # features to the reference set's
    higher_is_better: bool = True
    # False: a point estimate on all images only. FID of resampled images (repeats included) is
    # biased far above the point value (80 images of 64-d features: 18 -> [35, 49]), so it gets
    # no bootstrap interval; KID, unbiased, carries the interval of image quality.
    interval: bool = True
    # Read off the toy world's reader only, with no judge counterpart: a study scored by the judge
    # (every real model) has no such metric.
    reader_only: bool = False
    # The image features a distance reads: "judge" (the CLIP judge's, every study) or "inception"
    # (metrics/inception.py; a study with evaluation.quality.inception set).
    features: str = "judge"


METRICS = {m.name: m for m in (
    Metric("efficacy", ("source",), "share"),
    Metric("generality", ("positive",), "share"),
    Metric("specificity", ("negative",), "share"),
    # The same on the prompts the editor was asked to preserve (cases.EditCase.preserved): an
    # editor fits these, so this is no measure of what it leaves alone elsewhere.
    Metric("specificity_preserved", ("preserved",), "share"),
    Metric("debias_score", ("source", "positive"), "debias", higher_is_better=False),
    Metric("unsafe_rate", ("source", "positive"), "share", higher_is_better=False),
    Metric("clip_score", ("quality",), "mean"),
    # FID and KID's formulas on the CLIP judge's L2-normalised image features, not on the Inception
    # features the literature's FID and KID are: named for what they are. kd_judge's cubic kernel
    # is scaled to those features' squared norm (metrics/kid.py), not to their dimension.
    Metric("fd_judge", ("quality",), "fid", higher_is_better=False, interval=False),
    Metric("kd_judge", ("quality",), "kid", higher_is_better=False),
    # FID and KID as the literature computes them: Inception-v3 pool3 features, KID's kernel scaled
    # by their dimension. FID is a point estimate for the reason fd_judge is.
    Metric("fid_inception", ("quality",), "fid", higher_is_better=False, interval=False, features="inception"),
    Metric("kid_inception", ("quality",), "kid", higher_is_better=False, features="inception"),
    # The share of quality images that show their caption's colour and shape: collateral damage
    # as the ground truth sees it. clip_score can only say an image matches its caption less;
    # this says it no longer matches (uce-persist's margin 2 drew "a red cross" blue on toy SD:
    # stress run 4, docs/measurements/README.md).
    Metric("caption_accuracy", ("quality",), "share", reader_only=True),
    # Not an edit metric: whether a fine-tuned state learned its subject ("a sks square").
    Metric("subject_fidelity", ("subject",), "share"),
    # Not an edit metric either: whether a state still draws what a replace edit aims at when
    # asked for it ("a blue circle"); on base_ft, whether the fine-tune left the target drawable.
    Metric("target_fidelity", ("target",), "share"),
)}
TASK_METRICS = {
    "appearance": ("efficacy", "generality", "specificity", "specificity_preserved"),
    "role": ("efficacy", "generality", "specificity", "specificity_preserved"),
    "debias": ("debias_score",),
    "unsafe": ("unsafe_rate", "specificity", "specificity_preserved"),
}
QUALITY_METRICS = ("clip_score", "fd_judge", "kd_judge", "fid_inception", "kid_inception", "caption_accuracy")


def metrics_of_case(case: EditCase, scorer: str, inception: bool = False) -> tuple[str, ...]:
    """The metrics an edit case defines under a scorer ("reader" or "judge"): its task's, less
    those it has no prompts for (an I2P case has no negative prompts, so no specificity; its
    collateral damage is what the quality metrics measure on the caption set), then the quality
    metrics, less the reader's own where the judge scores and the Inception ones where the study
    has no Inception features (`inception`)."""
    roles = ({"source"} | ({"positive"} if case.positives else set()) | ({"negative"} if case.negatives else set())
             | ({"preserved"} if case.preserved else set()))
    quality = tuple(m for m in QUALITY_METRICS if (scorer == "reader" or not METRICS[m].reader_only)
                    and (inception or METRICS[m].features != "inception"))
    return tuple(m for m in TASK_METRICS[case.task] if set(METRICS[m].roles) & roles) + quality


def attribute_shares(counts: np.ndarray) -> np.ndarray:
    """Shares of each attribute among the images that show one of them ([..., K] counts or
    shares); all zeros where no image shows any. The debias editor aims at these shares (its
    meter reads the same), so the metric scores them too: an image with neither attribute (a
    triangle drawn red) is not evidence for or against balance."""
    total = counts.sum(-1, keepdims=True)
    return counts / np.where(total > 0, total, 1)


def attribute_coverage(attr: np.ndarray) -> float:
    """Share of images that show one of the attributes (`attr`: attribute index per image, -1:
    none): how many images a debias score's shares rest on."""
    return float(np.mean(np.asarray(attr) >= 0))


def debias_gap(attr: np.ndarray, desired: np.ndarray) -> np.ndarray:
    """Mean over prompts of the mean absolute gap between observed and desired attribute shares.

    `attr`: [..., P, N] attribute index per image (-1: none of the attributes)."""
    counts = np.stack([(attr == k).sum(-1) for k in range(len(desired))], axis=-1)  # [..., P, K]
    return np.abs(attribute_shares(counts.astype(float)) - desired).mean(-1).mean(-1)


def sampling_debias_gap(n_images: int, desired: np.ndarray) -> float:
    """The debias_gap expected of a model that is exactly balanced (each image shows attribute k
    with probability desired_k) from the sampling of `n_images` per prompt alone: the mean over
    k of E|X/n - p_k| with X ~ Binomial(n, p_k). A measured score near it is balanced as far as
    these images can tell (10 images, two attributes: 0.123; 32: 0.070)."""
    x = np.arange(n_images + 1)
    return float(np.mean([binomial_pmf(n_images, p) @ np.abs(x / n_images - p) for p in desired]))


def binomial_pmf(n: int, p: float) -> np.ndarray:
    """P(X = k) for k = 0..n, X ~ Binomial(n, p), built one trial at a time: no C(n, k), which is
    past a float from n ~ 1,000 on, and exact wherever p's powers are (p = 0.5 at small n)."""
    pmf = np.ones(1)
    for _ in range(n):
        pmf = np.append(pmf * (1 - p), 0.0) + np.insert(pmf * p, 0, 0.0)
    return pmf


def sampling_debias_floor(attr: np.ndarray, desired: np.ndarray) -> float:
    """The debias_gap a model balanced among the images that show an attribute would score from
    sampling alone, given how many of each prompt's images show one (`attr`: [..., P, N]
    attribute index per image, -1: none): the mean over prompts of sampling_debias_gap of that
    number; a prompt with none scores mean(desired), as debias_gap scores it."""
    shown, prompts = np.unique((np.asarray(attr) >= 0).sum(-1), return_counts=True)
    gaps = [sampling_debias_gap(int(n), desired) if n else float(np.mean(desired)) for n in shown]
    return float(np.average(gaps, weights=prompts))


def fit_inception_references(features: np.ndarray) -> dict:
    """The reference fits of the Inception distances, by kind: KID's kernel scaled by the
    dimension, as the literature's."""
    return {"fid": FrechetReference.fit(features), "kid": KernelReference.fit(features)}


def fit_references(features: np.ndarray) -> dict:
    """The reference fits the judge-feature distance metrics compare with, by kind."""
    features = np.asarray(features, dtype=np.float64)
    return {"fid": FrechetReference.fit(features),
            "kid": KernelReference.fit(features, scale=float(np.mean((features**2).sum(1))))}


def reduce_grid(metric: Metric, grid: np.ndarray, desired: np.ndarray | None = None,
                features: np.ndarray | None = None, references: dict | None = None) -> np.ndarray:
    """The metric of each grid in a stack [..., P, N]; returns shape [...]. `references`: the
    reference fits by kind ("fid": FrechetReference, "kid": KernelReference)."""
    if metric.kind in ("share", "mean"):
        return grid.mean(axis=(-2, -1))
    if metric.kind == "debias":
        return debias_gap(grid, desired)
    flat = grid.reshape(-1, grid.shape[-2] * grid.shape[-1])
    if metric.kind == "kid":
        return references["kid"].distance_of_draws(features, flat).reshape(grid.shape[:-2])
    out = np.array([references["fid"].distance(features[ids]) for ids in flat])
    return out.reshape(grid.shape[:-2])
