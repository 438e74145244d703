"""Paired two-stage bootstrap over prompts and images.

A metric's data for one state is a grid (prompts x images), and every state of a model has the
same grid (same prompts, same per-(prompt, index) seeds). A replicate resamples prompts with
replacement, then images within each drawn prompt; the *same* draw is applied to every state, so
differences between states (and retention, a ratio of differences) keep their pairing.
"""

from __future__ import annotations

import numpy as np


def draw_indices(shape: tuple[int, int], samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(prompt rows [B, P], image columns [B, P, N]) of `samples` replicates for a P x N grid.

    Depends only on (shape, samples, seed), so replicates of different states line up."""
    n_prompts, n_images = shape
    rng = np.random.default_rng([seed, n_prompts, n_images])
    rows = rng.integers(0, n_prompts, size=(samples, n_prompts))
    cols = rng.integers(0, n_images, size=(samples, n_prompts, n_images))
    return rows, cols


def resample(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The replicates of a grid: shape [B, P, N] (+ any trailing dims of the grid)."""
    return grid[rows[:, :, None], cols]


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite replicate values (NaN when none is finite)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


def retention(base, edited, base_ft, edited_ft):
    """(edited_ft - base_ft) / (edited - base), NaN where the edit changed nothing."""
    base, edited, base_ft, edited_ft = (np.asarray(x, dtype=float) for x in (base, edited, base_ft, edited_ft))
    effect = edited - base
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(effect == 0, np.nan, (edited_ft - base_ft) / effect)
