"""The fine-tuning core: one loop, the family's objective, the method as a parameterisation.

* lora / dora: a peft adapter on the denoiser's attention (and FLUX feed-forward) layers;
* full: every denoiser parameter;
* dreambooth: full, on "a sks <class>" instance images, plus prior preservation on class
  images generated beforehand by a separate rule from the model being tuned.

Latents are computed once (the VAE is frozen), and so are the text embeddings unless the
text encoders carry an adapter (`train_text_encoder`); a step then costs one denoiser forward
and backward.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import TrainingError
from ..latents import encode_latents
from ..training.loop import train_steps
from .adapters import TEXT_ENCODER_TARGETS, attach_adapter, packed_adapter_state
from .config import FinetuneConfig

log = logging.getLogger("editpersist")

# Images per VAE call when the training images are encoded: all 205 DreamBooth images of the
# published recipe in one call would hold ~258 GB of activations at SDXL's 1024 px (sized:
# editpersist.sizing); 16 holds ~20 GB and is one call for the toy study's 16 + 16 images.
ENCODE_BATCH = 16


def oom_hint(method: str) -> str:
    """What to change when a fine-tune runs out of memory, as config keys."""
    return (f"out of memory: lower finetuners.{method}.batch or the model's sampling height/width (the training "
            f"resolution), set finetuners.{method}.gradient_checkpointing: true, or finetuners.{method}.precision: "
            "bf16/fp16")


@dataclass
class ImageSet:
    """Training images (NHWC uint8) with one caption each."""

    images: np.ndarray
    captions: list[str]


@dataclass
class FinetuneResult:
    losses: list[float]
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # step -> trainable state
    step_ends: list[float] = field(default_factory=list)  # perf_counter() after each step, for benchmarks


def encode_captions(pipe, family, captions: list[str]) -> dict[str, torch.Tensor]:
    """Conditioning tensors the denoiser needs, per caption (same code path as generation),
    in fp32 for training. Differentiable: under torch.no_grad() unless the text encoders are
    trained."""
    return {k: v.float() for k, v in family.encode_prompts(pipe, captions).items()}


def caption_conditioning(pipe, family, captions: list[str], trainable: bool):
    """cond(index batch) -> conditioning tensors: looked up from a one-off encoding when the text
    encoders are frozen, encoded afresh (with gradients) when they carry a trained adapter."""
    if trainable:
        return lambda idx: encode_captions(pipe, family, [captions[i] for i in idx.tolist()])
    with torch.no_grad():
        cond = encode_captions(pipe, family, captions)
    return lambda idx: {k: v[idx] for k, v in cond.items()}


def trainable_parameters(pipe, family, cfg: FinetuneConfig) -> list[torch.nn.Parameter]:
    """The parameters the optimiser updates, in fp32: a half-precision pipeline's denoiser is
    trained as fp32 master weights (autocast does the half-precision compute), as the diffusers
    examples train it; AdamW's update at lr 5e-6 is below bf16's resolution of most weights."""
    denoiser = family.denoiser_of(pipe)
    for name in family.text_encoders + ("vae",):
        getattr(pipe, name).requires_grad_(False)
    if cfg.uses_adapter:
        params = attach_adapter(denoiser, family.lora_targets, cfg.rank, cfg.alpha, dora=cfg.spec.dora)
        if cfg.train_text_encoder:
            for name in family.lora_text_encoders:
                params += attach_adapter(getattr(pipe, name), TEXT_ENCODER_TARGETS, cfg.rank, cfg.alpha,
                                         dora=cfg.spec.dora)
        return params
    denoiser.float().requires_grad_(True)
    return list(denoiser.parameters())


def trained_tensors(pipe, family, cfg: FinetuneConfig) -> dict[str, torch.Tensor]:
    """What a fine-tune changed, keyed '<component>.<name>': the adapters' weights (the LoRA
    file's layout) or the denoiser's full state (applied like an edit delta)."""
    if cfg.uses_adapter:
        return packed_adapter_state(pipe, family)
    return {f"{family.denoiser}.{k}": v for k, v in family.denoiser_of(pipe).state_dict().items()}


def offload_frozen(pipe, family, device) -> None:
    """Move the frozen text encoders and VAE to `device` (the CPU during training, back after)."""
    for name in family.text_encoders + ("vae",):
        getattr(pipe, name).to(device)


def finetune(pipe, family, data: ImageSet, cfg: FinetuneConfig, prior: ImageSet | None = None) -> FinetuneResult:
    """Fine-tune pipe's denoiser in place on `data` (plus `prior` for DreamBooth); the denoiser
    returns to the pipeline's dtype afterwards."""
    if cfg.spec.prior_preservation and prior is None:
        raise ValueError("dreambooth needs class images for prior preservation")
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    denoiser = family.denoiser_of(pipe)
    pipe_dtype, device = denoiser.dtype, pipe.device
    params = trainable_parameters(pipe, family, cfg)
    if cfg.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    text = cfg.train_text_encoder
    inst = family.training_loss(pipe, encode_latents(pipe.vae, data.images, ENCODE_BATCH),
                                caption_conditioning(pipe, family, data.captions, text), g)
    prior_loss = None
    if cfg.spec.prior_preservation:
        prior_loss = family.training_loss(pipe, encode_latents(pipe.vae, prior.images, ENCODE_BATCH),
                                          caption_conditioning(pipe, family, prior.captions, text), g)
    if cfg.offload_frozen:
        offload_frozen(pipe, family, "cpu")
    n, n_prior = len(data.captions), len(prior.captions) if prior else 0
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    snap_steps = {max(1, round(f * cfg.steps)) - 1 for f in cfg.snapshots}
    result = FinetuneResult([])

    def loss(step: int) -> torch.Tensor:
        idx = torch.randint(0, n, (cfg.batch,), generator=g)
        with torch.autocast(pipe.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            value = inst(idx)
            if prior_loss is not None:
                value = value + cfg.prior_weight * prior_loss(torch.randint(0, n_prior, (cfg.batch,), generator=g))
        return value

    def after_step(step: int) -> None:
        result.step_ends.append(time.perf_counter())
        if step in snap_steps:
            result.snapshots[step + 1] = {k: v.detach().to(pipe_dtype if not cfg.uses_adapter else v.dtype).clone()
                                          for k, v in trained_tensors(pipe, family, cfg).items()}

    denoiser.train()
    try:
        result.losses = train_steps(params, loss, cfg.steps, cfg.lr, schedule="constant", desc=f"finetune-{cfg.method}",
                                    on_step=after_step)
    except torch.OutOfMemoryError as e:
        raise TrainingError(f"finetune-{cfg.method}: {oom_hint(cfg.method)}") from e
    finally:
        if cfg.offload_frozen:
            offload_frozen(pipe, family, device)
    if not cfg.uses_adapter:
        denoiser.to(pipe_dtype)
    denoiser.eval()
    return result
