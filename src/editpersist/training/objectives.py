"""Training objectives of the model families, shared by pre-training and fine-tuning.

* `DenoisingObjective` (SD 1.x/2.x, SDXL): epsilon or v-prediction, whichever the
  noise scheduler's config says, with optional min-SNR-gamma loss weighting
  (Hang et al., 2023), as in diffusers' train_text_to_image example.
* `FlowMatchingObjective` (FLUX): rectified flow x_t = (1 - s) x0 + s * noise,
  target noise - x0, sigmas drawn logit-normal as in the diffusers FLUX scripts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class DenoisingObjective:
    scheduler: object  # a diffusers DDPMScheduler (or any scheduler with add_noise/alphas_cumprod)
    snr_gamma: float | None = 5.0

    def loss(self, unet, latents, encoder_hidden_states, generator: torch.Generator, **cond) -> torch.Tensor:
        b = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype).to(latents.device)
        t = torch.randint(
            0, self.scheduler.config.num_train_timesteps, (b,), generator=generator
        ).to(latents.device)
        pred = self.prediction(unet, latents, noise, t, encoder_hidden_states, **cond)
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            target = noise
        elif kind == "v_prediction":
            target = self.scheduler.get_velocity(latents, noise, t)
        else:
            raise ValueError(f"scheduler prediction_type {kind!r} is not supported for training")
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * self.snr_weights(t, kind)).mean()

    def prediction(self, unet, latents, noise, t, encoder_hidden_states, **cond) -> torch.Tensor:
        """The UNet's output on `latents` noised with `noise` at timesteps `t`."""
        return unet(self.scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=encoder_hidden_states,
                    **cond).sample

    def snr_weights(self, t: torch.Tensor, kind: str) -> torch.Tensor:
        if not self.snr_gamma:
            return torch.ones_like(t, dtype=torch.float32)
        ac = self.scheduler.alphas_cumprod.to(t.device)[t].float()
        snr = ac / (1 - ac).clamp_min(1e-8)
        clipped = torch.minimum(snr, torch.full_like(snr, self.snr_gamma))
        # For v-prediction the min-SNR weight is divided by SNR + 1 (paper, eq. 8).
        return clipped / (snr + 1) if kind == "v_prediction" else clipped / snr.clamp_min(1e-8)


def pack_flux_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): FLUX's 2x2 patchification."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_flux_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, d = tokens.shape
    c = d // 4
    x = tokens.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def flux_image_ids(h: int, w: int, device, dtype) -> torch.Tensor:
    """Positional ids of packed latent tokens, as FluxPipeline._prepare_latent_image_ids."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


@dataclass
class FlowMatchingObjective:
    logit_mean: float = 0.0
    logit_std: float = 1.0

    def loss(self, transformer, latents, prompt_embeds, pooled, generator: torch.Generator) -> torch.Tensor:
        b = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype).to(latents.device)
        u = torch.randn(b, generator=generator) * self.logit_std + self.logit_mean
        sigma = torch.sigmoid(u).to(latents.device, latents.dtype)
        pred = self.prediction(transformer, latents, noise, sigma, prompt_embeds, pooled)
        return F.mse_loss(pred.float(), pack_flux_latents(noise - latents).float())

    def prediction(self, transformer, latents, noise, sigma, prompt_embeds, pooled) -> torch.Tensor:
        """The transformer's (packed) output on x_sigma = (1 - sigma) x0 + sigma * noise."""
        b, _, h, w = latents.shape
        s = sigma.view(b, 1, 1, 1)
        guidance = None
        if transformer.config.guidance_embeds:
            guidance = torch.full((b,), 1.0, device=latents.device, dtype=latents.dtype)
        return transformer(
            hidden_states=pack_flux_latents((1 - s) * latents + s * noise),
            timestep=sigma,
            guidance=guidance,
            pooled_projections=pooled,
            encoder_hidden_states=prompt_embeds,
            txt_ids=torch.zeros(prompt_embeds.shape[1], 3, device=latents.device, dtype=latents.dtype),
            img_ids=flux_image_ids(h, w, latents.device, latents.dtype),
            return_dict=False,
        )[0]
