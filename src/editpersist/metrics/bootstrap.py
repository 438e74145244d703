"""Paired bootstrap over prompts and images, and the draws it shares between states.

A metric's data for one state is a grid (prompts x images), and every state of a model has the
same grid (same prompts, same per-(prompt, index) noise seeds). A fine-tuned state exists once
per fine-tune seed, so its data is a stack of such grids (seeds x prompts x images).

Prompts and images are crossed with fine-tune seeds, not nested in them: every fine-tune seed
is asked the same prompts with the same noise. A replicate resamples the prompts with replacement
and images within each drawn prompt; the *same* draws apply to every state and every seed, so
differences between states (and retention, a ratio of differences) keep their pairing. The
evaluation keeps every seed in every replicate (`resample_each_seed`): seed-to-seed spread is
not a bootstrap's to judge from 2-5 seeds (metrics.seed_interval). `draw_seeds` and `resample`,
which also resample the seeds, serve the measurement scripts under docs/measurements.
"""

from __future__ import annotations

import zlib

import numpy as np

from .seed_interval import jeffreys_share_variance


def draw_indices(shape: tuple[int, int], samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(prompt rows [B, P], image columns [B, P, N]) of `samples` replicates for a P x N grid.

    Depends only on (shape, samples, seed), so replicates of different states line up."""
    n_prompts, n_images = shape
    rng = np.random.default_rng([seed, n_prompts, n_images])
    rows = rng.integers(0, n_prompts, size=(samples, n_prompts))
    cols = rng.integers(0, n_images, size=(samples, n_prompts, n_images))
    return rows, cols


def draw_seeds(n_seeds: int, samples: int, seed: int) -> np.ndarray:
    """Fine-tune seed indices [B, S] of `samples` replicates; depends only on its arguments, and
    its stream is separate from `draw_indices`'s (so one seed is the plain two-stage bootstrap)."""
    rng = np.random.default_rng([seed, n_seeds, 7919])
    return rng.integers(0, n_seeds, size=(samples, n_seeds))


def resample(stack: np.ndarray, rows: np.ndarray, cols: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The replicates of a seed stack [S, P, N] (+ any trailing dims): shape [B, S * P, N], the
    drawn seeds' prompt rows one after another."""
    out = stack[seeds[:, :, None, None], rows[:, None, :, None], cols[:, None, :, :]]  # [B, S, P, N]
    return out.reshape(out.shape[0], -1, *out.shape[3:])


def resample_each_seed(stack: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The replicates of every seed of a stack [S, P, N], each seed kept and resampled with the
    same prompt rows [B, P] and image columns [B, P, N]: shape [S, B, P, N]."""
    return stack[:, rows[:, :, None], cols]


def with_share_floor(shares: np.ndarray, replicates: np.ndarray, n_images: int, key: str, seed: int) -> np.ndarray:
    """Share replicates [S, B] (one row per state) whose variance is topped up to at least the
    Jeffreys-smoothed binomial variance of their state's share (seed_interval.
    jeffreys_share_variance) by zero-mean normal noise; a state whose images all hit (or all
    miss) otherwise has replicates without any spread. The noise depends only on (`key`, `seed`):
    a state has the same replicates in every row that reads it."""
    floor = jeffreys_share_variance(np.asarray(shares) * n_images, n_images)
    short = np.clip(floor - replicates.var(axis=1), 0.0, None)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return replicates + rng.normal(size=replicates.shape) * np.sqrt(short)[:, None]


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite replicate values (NaN when none is finite)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


def dropped(values: np.ndarray) -> int:
    """Replicates without a value (a ratio whose denominator was 0 in that replicate): the
    interval is taken over the others, and this count is reported beside it."""
    return int((~np.isfinite(values)).sum())


def retention(base, edited, base_ft, edited_ft):
    """(edited_ft - base_ft) / (edited - base), NaN where the edit changed nothing."""
    base, edited, base_ft, edited_ft = (np.asarray(x, dtype=float) for x in (base, edited, base_ft, edited_ft))
    effect = edited - base
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(effect == 0, np.nan, (edited_ft - base_ft) / effect)
