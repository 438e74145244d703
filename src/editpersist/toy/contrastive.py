"""Contrastive (CLIP-style) training on the toy world, shared by the text encoder and the judge.

In-batch negatives are not all negative here: "a circle" and "a red circle"
describe the same images, and "a king" matches a square of any colour. So the
targets are the normalised matrix of which caption is consistent with which
image, instead of the identity matrix of standard CLIP (which would push
correct pairs apart).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .world import COLORS, Sample, WorldSpec


def caption_colors(sample: Sample, spec: WorldSpec) -> frozenset[str]:
    """The colours an image may have and still fit the caption of `sample`."""
    words = sample.caption.split()
    named = [w for w in words if w in COLORS]
    if named:
        return frozenset(named)
    if sample.shape in spec.default_color and sample.shape in words:
        return frozenset(spec.default_color[sample.shape])
    return frozenset(COLORS)


def consistency(samples: list[Sample], spec: WorldSpec) -> np.ndarray:
    """M[i, j] = 1 if caption j fits image i (same shape, allowed colour)."""
    allowed = [caption_colors(s, spec) for s in samples]
    shapes = np.array([s.shape for s in samples])
    colors = [s.color for s in samples]
    same_shape = shapes[:, None] == shapes[None, :]
    fits_color = np.array([[c in a for a in allowed] for c in colors])
    return (same_shape & fits_color).astype(np.float32)


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                     match: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy against soft targets given by the consistency matrix."""
    logits = logit_scale.exp().clamp(max=100) * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    t_img = match / match.sum(1, keepdim=True)
    t_txt = match.T / match.T.sum(1, keepdim=True)
    return 0.5 * (-(t_img * logits.log_softmax(1)).sum(1).mean() - (t_txt * logits.T.log_softmax(1)).sum(1).mean())
