"""The toy world's AutoencoderKL: 32x32 RGB <-> a 4x smaller latent grid.

A compact latent is what makes the toy diffusion models learnable in minutes on
a CPU: an 8x8 latent has 16x fewer positions than the image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import AutoencoderKL

from ..latents import to_model_range
from ..training.loop import train_steps


def build_vae(latent_channels: int, widths: tuple[int, ...] = (32, 64, 64)) -> AutoencoderKL:
    n = len(widths)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=widths,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=min(16, math.gcd(*widths)),  # GroupNorm needs groups dividing every width
        sample_size=32,
        mid_block_add_attention=False,
    )


def train_vae(vae: AutoencoderKL, images: np.ndarray, steps: int, batch: int, lr: float,
              kl_weight: float, seed: int) -> list[float]:
    """Reconstruction (L1 + MSE) with a small KL term, which keeps the latent smooth enough to diffuse."""
    data = to_model_range(images)
    g = torch.Generator().manual_seed(seed)

    def loss(step: int) -> torch.Tensor:
        idx = torch.randint(0, len(data), (batch,), generator=g)
        x = data[idx]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        kl = 0.5 * (post.mean**2 + post.var - 1.0 - post.logvar).mean()
        return (rec - x).abs().mean() + ((rec - x) ** 2).mean() + kl_weight * kl

    vae.train()
    losses = train_steps(vae.parameters(), loss, steps, lr, warmup=50, desc="vae")
    vae.eval()
    return losses


@torch.no_grad()
def encode_means(vae: AutoencoderKL, images: np.ndarray, batch: int = 512) -> torch.Tensor:
    """Posterior means of the raw latents (before the pipeline's scaling)."""
    out = [vae.encode(to_model_range(images[i:i + batch])).latent_dist.mean
           for i in range(0, len(images), batch)]
    return torch.cat(out)


def fit_latent_normalisation(vae: AutoencoderKL, latents: torch.Tensor, with_shift: bool) -> None:
    """Set scaling_factor (and FLUX's shift_factor) so the diffusion model sees unit-variance latents."""
    shift = float(latents.mean()) if with_shift else 0.0
    scale = 1.0 / float((latents - shift).std())
    vae.register_to_config(scaling_factor=scale, shift_factor=shift if with_shift else None)


@torch.no_grad()
def reconstruction_error(vae: AutoencoderKL, images: np.ndarray) -> float:
    x = to_model_range(images)
    rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    return float((rec - x).abs().mean() * 127.5)
