"""Seed-level intervals: a t-interval across fine-tune seeds with the within-seed variance added.

A quantity measured once per fine-tune seed (a retention, a difference of two editors'
retentions, a mean over cells) varies for two reasons: the fine-tune itself (seed to seed) and
the images and prompts each state was measured on (within a seed, partly shared by every seed:
the unedited and edited models are measured once, and every state reads the same prompts with
the same noise). With S seeds the statistic is the mean of its per-seed values, and

    se^2 = s^2 / S + V_within
    interval = mean +- t(S - 1, 0.975) se

where s^2 is the sample variance of the per-seed values (it holds the seed-to-seed spread and
the image noise that differs between seeds) and V_within is the variance of the mean over the
replicates of a bootstrap of prompts and images that keeps every seed (it holds the noise of
the states all seeds share, which s^2 cannot see, and counts the per-seed image noise a second
time: deliberately, since with 2-4 seeds s^2 alone is one to three degrees of freedom). The
degrees of freedom are S - 1 whatever V_within is, which is conservative where the images
dominate and right where the seeds do. With 2 seeds t is 12.7: a retention known to 0.05 per
seed gets an interval about +-0.9 wide. A bootstrap that resamples 2 seeds instead gives the
range of the two, and a zero-width interval when they agree.

One seed (S = 1) says nothing about seed-to-seed spread: the interval is the normal one from
V_within alone, and says so (df 0).

V_within is read off the replicates' central 95 % (width / 3.92, the normal's standard
deviation), not their variance: a ratio's replicates have long tails wherever a replicate's
denominator comes near 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NORMAL_975 = 1.959963984540054


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df (Abramowitz & Stegun 26.7.3-4, exact)."""
    theta = math.atan(t / math.sqrt(df))
    c, s = math.cos(theta), math.sin(theta)
    if df % 2 == 1:
        total, term = 0.0, c
        for k in range(1, (df - 1) // 2 + 1):
            if k > 1:
                term *= c * c * (2 * k - 2) / (2 * k - 1)
            total += term
        return (2 / math.pi) * (theta + s * total) if df > 1 else (2 / math.pi) * theta
    total, term = 1.0, 1.0
    for k in range(1, df // 2):
        term *= c * c * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided `level` quantile of Student's t with integer df >= 1 (t(1) = 12.706,
    t(4) = 2.776), by bisection on the exact distribution function."""
    if df < 1 or int(df) != df:
        raise ValueError(f"t_quantile: df must be a positive integer, got {df!r}")
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, int(df)) < level:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_two_sided_mass(mid, int(df)) < level:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def robust_variance(replicates: np.ndarray) -> float:
    """Variance read off the central 95 % of the finite replicates ((width / 3.92)^2); NaN when
    none is finite."""
    finite = np.asarray(replicates, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan")
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return float(((hi - lo) / (2 * NORMAL_975)) ** 2)


@dataclass(frozen=True)
class SeedInterval:
    value: float
    low: float
    high: float
    se: float
    df: int  # S - 1; 0: one seed, the interval is of images and prompts only
    n_seeds: int


def seed_level_interval(per_seed: np.ndarray, within: np.ndarray, level: float = 0.95) -> SeedInterval:
    """The mean of `per_seed` [S] with its seed-level interval; `within` [B]: the bootstrap
    replicates of that mean with every seed kept (see the module's docstring)."""
    per_seed = np.asarray(per_seed, dtype=float)
    n = per_seed.size
    nan = float("nan")
    if n == 0 or not np.isfinite(per_seed).all():
        return SeedInterval(nan, nan, nan, nan, max(n - 1, 0), n)
    value = float(per_seed.mean())
    between = float(per_seed.var(ddof=1)) / n if n > 1 else 0.0
    se = math.sqrt(between + robust_variance(within))
    q = t_quantile(n - 1, level) if n > 1 else NORMAL_975
    return SeedInterval(value, value - q * se, value + q * se, se, n - 1, n)


def jeffreys_share_variance(hits: np.ndarray, n_images: int) -> np.ndarray:
    """Variance of a share of `n_images` images with the Jeffreys prior's half image added to the
    hits and to the misses: p = (k + 1/2) / (n + 1), p (1 - p) / n. A state whose images all hit
    has a bootstrap variance of 0; the truth behind 32 hits of 32 may well be 0.97."""
    p = (np.asarray(hits, dtype=float) + 0.5) / (n_images + 1)
    return p * (1 - p) / n_images


def combined_interval(parts: list[tuple[float, tuple[int, ...], np.ndarray, np.ndarray]],
                      level: float = 0.95) -> SeedInterval:
    """The seed-level interval of sum_k coef_k x_k, for quantities x_k each measured per fine-tune
    seed (`parts`: (coef, seed ids, per-seed values [S_k], per-seed replicates [S_k, B])): a mean
    over cells, or the difference of two editors on the same cells. Only the seeds every part has
    enter, seed by seed, so what the parts share through a seed (its fine-tuned base, its data)
    cancels or adds as it does in truth; the replicates line up because every state of a model is
    resampled with the same draws."""
    common = sorted(set.intersection(*(set(seeds) for _, seeds, _, _ in parts))) if parts else []
    if not common:
        return seed_level_interval(np.array([]), np.array([]), level)
    per_seed, within = 0.0, 0.0
    for coef, seeds, values, reps in parts:
        idx = [list(seeds).index(s) for s in common]
        per_seed = per_seed + coef * np.asarray(values, dtype=float)[idx]
        within = within + coef * np.asarray(reps, dtype=float)[idx].mean(0)
    return seed_level_interval(per_seed, within, level)
