"""The toy CLIP whose text tower conditions the toy diffusion models.

Real SD and FLUX condition on the text tower of a contrastively pre-trained
CLIP; the toy models do the same, so that text-encoder editors (ReFACT) and
the projected, EOS-pooled embedding they optimise have the same meaning here
as on real models. The toy CLIP is a transformers `CLIPModel`, saved with
`save_pretrained`.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
)

from ..latents import to_model_range
from ..training.loop import train_steps
from .contrastive import consistency, contrastive_loss
from .world import Sample, WorldSpec


def build_clip(vocab_size: int, max_len: int, bos_id: int, eos_id: int, pad_id: int,
               width: int = 64, layers: int = 4) -> CLIPModel:
    text = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=4 * width,
        num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=max_len,
        projection_dim=width, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=width, intermediate_size=4 * width, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=4, projection_dim=width,
    )
    return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=width))


def train_clip(model: CLIPModel, tokenizer, images: np.ndarray, samples: list[Sample], spec: WorldSpec,
               steps: int, batch: int, lr: float, seed: int) -> list[float]:
    ids = tokenizer([s.caption for s in samples], padding="max_length", truncation=True,
                    max_length=tokenizer.model_max_length, return_tensors="pt")
    pixels = to_model_range(images)
    g = torch.Generator().manual_seed(seed)

    def loss(step: int) -> torch.Tensor:
        idx = torch.randint(0, len(samples), (batch,), generator=g)
        match = torch.from_numpy(consistency([samples[i] for i in idx.tolist()], spec))
        out = model(input_ids=ids.input_ids[idx], attention_mask=ids.attention_mask[idx], pixel_values=pixels[idx])
        return contrastive_loss(out.image_embeds, out.text_embeds, model.logit_scale, match)

    model.train()
    losses = train_steps(model.parameters(), loss, steps, lr, weight_decay=0.01, warmup=50, desc="text-clip")
    model.eval()
    return losses


def text_tower(model: CLIPModel) -> CLIPTextModel:
    """The CLIPTextModel that a diffusers pipeline loads as `text_encoder`."""
    # In transformers 5 CLIPModel.text_model already is a CLIPTextModel.
    tower = CLIPTextModel(model.config.text_config)
    tower.load_state_dict(model.text_model.state_dict())
    return tower.eval()
