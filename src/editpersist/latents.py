"""Images <-> the latent space a diffusion model trains in (shared by pre-training and fine-tuning)."""

from __future__ import annotations

import numpy as np
import torch


def to_model_range(images_uint8: np.ndarray) -> torch.Tensor:
    """NHWC uint8 -> NCHW float in [-1, 1], the range diffusers' VAEs use."""
    return torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def scaled_latents(vae, raw: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents -> what the denoiser sees (FLUX's shift, then the scaling factor)."""
    shift = vae.config.shift_factor or 0.0
    return (raw - shift) * vae.config.scaling_factor


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch: int = 512) -> torch.Tensor:
    """Scaled posterior means of NHWC uint8 images, as float32 on the VAE's device."""
    out = [vae.encode(to_model_range(images[i:i + batch]).to(vae.device, vae.dtype)).latent_dist.mean
           for i in range(0, len(images), batch)]
    return scaled_latents(vae, torch.cat(out)).float()
