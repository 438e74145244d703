"""The toy world's attribute reader: ground truth for what an image shows.

Colour is read from pixels (the palette colour nearest to the median
foreground pixel); shape by a small CNN trained on renders. The CNN sees the
foreground mask rather than the RGB image, so its decision cannot depend on
colour, which keeps the two attributes independent readings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io import atomic_dir, load_tensors
from ..training.loop import train_steps
from .world import BACKGROUND, COLORS, SHAPES

FOREGROUND_THRESHOLD = 60  # max |pixel - background| over channels, in 0..255
MIN_FOREGROUND = 12  # pixels; fewer means "no object"
NONE = "none"


def foreground_mask(images: np.ndarray) -> np.ndarray:
    """NHWC uint8 -> NHW bool: pixels clearly different from the background."""
    diff = np.abs(images.astype(np.int16) - np.array(BACKGROUND, dtype=np.int16)).max(-1)
    return diff > FOREGROUND_THRESHOLD


def read_colors(images: np.ndarray) -> list[str]:
    masks = foreground_mask(images)
    palette = np.array(list(COLORS.values()), dtype=np.float32)
    names = list(COLORS)
    out = []
    for img, m in zip(images, masks):
        if m.sum() < MIN_FOREGROUND:
            out.append(NONE)
            continue
        median = np.median(img[m].astype(np.float32), axis=0)
        out.append(names[int(((palette - median) ** 2).sum(1).argmin())])
    return out


class ShapeNet(nn.Module):
    def __init__(self, n_classes: int = len(SHAPES), width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(8 * width, n_classes),
        )

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.body(mask)


def _mask_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(foreground_mask(images)).float().unsqueeze(1)


def augment_masks(masks: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Soften and perturb edges so the classifier tolerates a generator's blurry, ragged shapes."""
    blurred = F.avg_pool2d(masks, 3, stride=1, padding=1)
    mix = torch.rand(len(masks), 1, 1, 1, generator=g)
    noisy = mix * blurred + (1 - mix) * masks + 0.15 * torch.randn(masks.shape, generator=g)
    return (noisy > 0.5).float()


@dataclass
class AttributeReader:
    shape_net: ShapeNet

    @torch.no_grad()
    def read(self, images: np.ndarray) -> list[dict[str, str]]:
        """One {"color", "shape"} reading per NHWC uint8 image ("none" where nothing is drawn)."""
        colors = read_colors(images)
        logits = self.shape_net(_mask_tensor(images))
        shapes = [SHAPES[i] for i in logits.argmax(1).tolist()]
        return [
            {"color": c, "shape": NONE if c == NONE else s} for c, s in zip(colors, shapes)
        ]

    def save(self, out_dir: Path) -> None:
        from safetensors.torch import save_file

        with atomic_dir(out_dir) as tmp:
            save_file(self.shape_net.state_dict(), tmp / "shape_net.safetensors")
            (tmp / "reader.json").write_text(json.dumps({
                "shapes": list(SHAPES), "colors": COLORS, "background": BACKGROUND,
                "foreground_threshold": FOREGROUND_THRESHOLD,
            }, indent=2))

    @classmethod
    def load(cls, path: Path) -> "AttributeReader":
        net = ShapeNet()
        net.load_state_dict(load_tensors(Path(path) / "shape_net.safetensors"))
        return cls(net.eval())


def train_reader(images: np.ndarray, shapes: list[str], steps: int, batch: int, lr: float, seed: int) -> AttributeReader:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = ShapeNet()
    masks = _mask_tensor(images)
    labels = torch.tensor([SHAPES.index(s) for s in shapes])

    def loss(step: int) -> torch.Tensor:
        idx = torch.randint(0, len(labels), (batch,), generator=g)
        return F.cross_entropy(net(augment_masks(masks[idx], g)), labels[idx])

    train_steps(net.parameters(), loss, steps, lr, desc="reader")
    return AttributeReader(net.eval())
