"""Deterministic renderer of the toy world's images.

Shapes are drawn large and roughly centred (the world is designed for
learnability by tiny models), anti-aliased by supersampling, with small jitter
of position, size and colour so that a model must learn the concept rather
than one bitmap.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .world import BACKGROUND, COLORS, SHAPES, Sample

SUPERSAMPLE = 4


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "square":
        h = 0.85 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        R = 1.15 * r
        return [(cx + R * np.cos(a), cy + 0.15 * r + R * np.sin(a))
                for a in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)]
    if shape == "cross":
        a, w = r, 0.36 * r
        return [(cx - w, cy - a), (cx + w, cy - a), (cx + w, cy - w), (cx + a, cy - w),
                (cx + a, cy + w), (cx + w, cy + w), (cx + w, cy + a), (cx - w, cy + a),
                (cx - w, cy + w), (cx - a, cy + w), (cx - a, cy - w), (cx - w, cy - w)]
    return None


def render_shape(color: str, shape: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One HxWx3 uint8 image of `shape` in `color` on the world's background."""
    if shape not in SHAPES:
        raise ValueError(f"unknown toy shape {shape!r}; expected one of {SHAPES}")
    S = size * SUPERSAMPLE
    jitter = rng.integers(-12, 13, size=3)
    fill = tuple(int(np.clip(v + j, 0, 255)) for v, j in zip(COLORS[color], jitter))
    cx, cy = (S / 2 + rng.uniform(-0.08, 0.08) * S for _ in range(2))
    r = rng.uniform(0.28, 0.36) * S
    img = Image.new("RGB", (S, S), BACKGROUND)
    draw = ImageDraw.Draw(img)
    poly = _shape_polygon(shape, cx, cy, r)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(poly, fill=fill)
    return np.asarray(img.resize((size, size), Image.BOX), dtype=np.uint8)


def render_samples(samples: list[Sample], seed: int, size: int = 32) -> np.ndarray:
    """Render each sample; image i depends only on (seed, i), not on the batch."""
    out = np.empty((len(samples), size, size, 3), dtype=np.uint8)
    for i, s in enumerate(samples):
        out[i] = render_shape(s.color, s.shape, np.random.default_rng([seed, i]), size)
    return out
