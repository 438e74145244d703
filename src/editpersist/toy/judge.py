"""The toy world's CLIP judge: an open_clip model trained on the world with its own seed.

It is saved as an open_clip "local-dir" model (open_clip_config.json plus
open_clip_model.safetensors), so evaluation loads it through the very call that
loads a pretrained open_clip model on real runs
(`open_clip.create_model_and_transforms("local-dir:<path>")`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_dir
from ..latents import to_model_range
from ..training.loop import train_steps
from .contrastive import consistency, contrastive_loss
from .world import Sample, WorldSpec

# mean = std = 0.5 maps [0, 1] pixels to [-1, 1], the range used in training.
PREPROCESS_CFG = {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                  "interpolation": "bicubic", "resize_mode": "shortest"}


def judge_model_cfg(width: int = 64, context_length: int = 16) -> dict:
    return {
        "embed_dim": width,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": width, "patch_size": 4, "head_width": 16},
        "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": width,
                     "heads": 4, "layers": 2},
    }


def train_judge(images: np.ndarray, samples: list[Sample], spec: WorldSpec, out_dir: Path,
                steps: int, batch: int, lr: float, seed: int) -> None:
    import open_clip

    torch.manual_seed(seed)
    cfg = judge_model_cfg()
    model = open_clip.model.CLIP(**cfg)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
    tokens = tokenizer([s.caption for s in samples])
    pixels = to_model_range(images)
    g = torch.Generator().manual_seed(seed)

    def loss(step: int) -> torch.Tensor:
        idx = torch.randint(0, len(samples), (batch,), generator=g)
        match = torch.from_numpy(consistency([samples[i] for i in idx.tolist()], spec))
        return contrastive_loss(model.encode_image(pixels[idx]), model.encode_text(tokens[idx]),
                                model.logit_scale, match)

    model.train()
    train_steps(model.parameters(), loss, steps, lr, weight_decay=0.01, warmup=50, desc="judge")
    model.eval()
    save_open_clip_dir(model, cfg, out_dir)


def save_open_clip_dir(model, cfg: dict, out_dir: Path) -> None:
    """An open_clip "local-dir:" model: open_clip_config.json plus open_clip_model.safetensors."""
    from safetensors.torch import save_file

    with atomic_dir(out_dir) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "open_clip_model.safetensors")
        (tmp / "open_clip_config.json").write_text(
            json.dumps({"model_cfg": cfg, "preprocess_cfg": PREPROCESS_CFG}, indent=2))
