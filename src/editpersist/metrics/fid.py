"""Fréchet distance between Gaussian fits of two feature sets (FID with any feature extractor).

The reference set is fixed, so the distance is computed as
|mu - mu_r|^2 + tr C + tr C_r - 2 tr sqrt(C_r^1/2 C C_r^1/2), with C_r^1/2 computed once:
the matrix square root of a symmetric PSD matrix needs only `eigvalsh`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


@dataclass(frozen=True)
class FrechetReference:
    mu: np.ndarray
    trace: float
    sqrt_cov: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> "FrechetReference":
        f = np.asarray(features, dtype=np.float64)
        cov = np.cov(f, rowvar=False)
        return cls(f.mean(0), float(np.trace(cov)), _psd_sqrt(cov))

    def distance(self, features: np.ndarray) -> float:
        f = np.asarray(features, dtype=np.float64)
        mu, cov = f.mean(0), np.cov(f, rowvar=False)
        cross = np.linalg.eigvalsh(self.sqrt_cov @ cov @ self.sqrt_cov)
        return float(((mu - self.mu) ** 2).sum() + np.trace(cov) + self.trace
                     - 2.0 * np.sqrt(np.clip(cross, 0, None)).sum())
