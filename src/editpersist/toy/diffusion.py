"""Pre-training of the toy SD and toy FLUX pipelines from scratch on the toy world.

Both models are trained with the very objectives that fine-tuning uses later
(`training.objectives`), on VAE latents computed once. Classifier-free guidance
needs an unconditional branch, so captions are dropped to "" with probability
`p_uncond`, as in SD's own training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, T5Config, T5EncoderModel

from ..tokens import tokenize
from ..training.loop import train_steps
from ..training.objectives import DenoisingObjective, FlowMatchingObjective
from .world import COLORS, Sample


@dataclass
class PretrainConfig:
    steps: int
    batch: int
    lr: float
    p_uncond: float = 0.1
    seed: int = 0
    # FLUX only: the pooled vector is the empty prompt's with this probability, so that the
    # transformer must read the prompt from the T5 states (real FLUX reads mostly T5).
    p_drop_pooled: float = 0.0
    # A caption's colour-word text states are removed with this probability (the encoder still
    # read the whole caption), so that the denoiser must also find the colour in the noun, EOS
    # and padding states, as ReFACT's subject-confined edit needs.
    p_drop_attribute: float = 0.0


# ---------------------------------------------------------------- SD ---------

def build_sd_unet(latent_channels: int, cross_dim: int, widths=(32, 64), latent_size: int = 8) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=("CrossAttnDownBlock2D",) * len(widths),
        up_block_types=("CrossAttnUpBlock2D",) * len(widths),
        block_out_channels=widths,
        layers_per_block=1,
        cross_attention_dim=cross_dim,
        # diffusers names the head count "attention_head_dim" for SD-style UNets. Two
        # heads keep per-head width at 16-32: on CPU many tiny heads cost more than they add.
        attention_head_dim=2,
        norm_num_groups=32,
    )


def sd_schedulers() -> tuple[DDPMScheduler, DDIMScheduler]:
    """v-prediction on a zero-terminal-SNR schedule (Lin et al., 2024).

    With plain epsilon-prediction, DDIM from t=999 returns noise on a small model
    (design.md section 8); v-prediction with zero terminal SNR starts sampling
    from pure noise consistently and needs no x0 clipping of the latents.
    """
    common = dict(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        prediction_type="v_prediction", rescale_betas_zero_snr=True,
    )
    train = DDPMScheduler(**common)
    sample = DDIMScheduler(**common, timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=False,
                           steps_offset=1)
    return train, sample


@torch.no_grad()
def encode_prompts_clip(text_encoder: CLIPTextModel, tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token hidden states and pooled outputs, as the pipelines compute them."""
    out = text_encoder(tokenize(tokenizer, prompts).input_ids)
    return out.last_hidden_state, out.pooler_output


def caption_index(samples: list[Sample]) -> tuple[list[str], torch.Tensor]:
    """Unique captions ("" first, for the unconditional branch) and each sample's index into them."""
    uniq = [""] + sorted({s.caption for s in samples} - {""})
    pos = {c: i for i, c in enumerate(uniq)}
    return uniq, torch.tensor([pos[s.caption] for s in samples])


def attribute_positions(tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the colour words' tokens in `ids` (each colour word must be one token)."""
    words = [tokenizer(c, add_special_tokens=False).input_ids for c in COLORS]
    if any(len(w) != 1 for w in words):
        raise ValueError(f"the toy tokenizer must keep every colour word whole: {dict(zip(COLORS, words))}")
    return torch.isin(ids, torch.tensor([w[0] for w in words]))


def drop_attribute_states(embeds: torch.Tensor, attribute: torch.Tensor, p: float,
                          g: torch.Generator) -> torch.Tensor:
    """`embeds` with, in each row drawn with probability `p`, the colour word's states removed
    and the row's last (padding) state repeated at the end. Removed rather than zeroed: a
    zeroed slot would tell the denoiser that a colour was named, and it would keep reading
    bare captions ("a circle") by their default colour. No draw at p = 0, so a model built
    without it stays bit-identical."""
    if p == 0:
        return embeds
    dropped = attribute & (torch.rand(len(embeds), 1, generator=g) < p)
    length = embeds.shape[1]
    kept_first = torch.argsort(dropped.int(), dim=1, stable=True)
    n_kept = (~dropped).sum(1, keepdim=True)
    index = torch.where(torch.arange(length)[None] < n_kept, kept_first, torch.full_like(kept_first, length - 1))
    return embeds.gather(1, index[..., None].expand(-1, -1, embeds.shape[-1]))


def pretrain_sd(unet, train_sched, text_encoder, tokenizer, latents: torch.Tensor, samples: list[Sample],
                cfg: PretrainConfig) -> list[float]:
    """latents: scaled VAE latents of the images of `samples`."""
    captions, cap_idx = caption_index(samples)
    hidden, _ = encode_prompts_clip(text_encoder, tokenizer, captions)
    attribute = attribute_positions(tokenizer, tokenize(tokenizer, captions).input_ids)
    objective = DenoisingObjective(train_sched)
    g = torch.Generator().manual_seed(cfg.seed)

    def loss(step: int) -> torch.Tensor:
        idx = torch.randint(0, len(samples), (cfg.batch,), generator=g)
        c = cap_idx[idx].clone()
        c[torch.rand(cfg.batch, generator=g) < cfg.p_uncond] = 0
        return objective.loss(unet, latents[idx], drop_attribute_states(hidden[c], attribute[c], cfg.p_drop_attribute, g),
                              g)

    unet.train()
    losses = train_steps(unet.parameters(), loss, cfg.steps, cfg.lr, warmup=100, desc="toy-sd")
    unet.eval()
    return losses


def sd_prediction(unet, train_sched, encoder, latents: torch.Tensor):
    """predict(idx, [clip ids], noise_seed): the UNet's output for training samples `idx` at
    noise and timesteps drawn from `noise_seed`, for toy/unseen_rows.py."""
    objective = DenoisingObjective(train_sched)

    def predict(idx: torch.Tensor, ids: list[torch.Tensor], noise_seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(noise_seed)
        x = latents[idx]
        noise = torch.randn(x.shape, generator=g)
        t = torch.randint(0, train_sched.config.num_train_timesteps, (len(idx),), generator=g)
        return objective.prediction(unet, x, noise, t, encoder(ids[0]).last_hidden_state)

    return predict


def assemble_sd(vae: AutoencoderKL, text_encoder, tokenizer, unet, sample_sched) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sample_sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


# -------------------------------------------------------------- FLUX ---------

def build_t5(vocab_size: int, width: int = 64, layers: int = 2) -> T5EncoderModel:
    cfg = T5Config(
        vocab_size=vocab_size, d_model=width, d_kv=width // 4, d_ff=2 * width, num_layers=layers,
        num_heads=4, feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        dropout_rate=0.0,
    )
    return T5EncoderModel(cfg)


def build_flux_transformer(latent_channels: int, t5_dim: int, pooled_dim: int, width: int = 128,
                           double_layers: int = 2, single_layers: int = 2) -> FluxTransformer2DModel:
    heads = width // 32
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * latent_channels,
        num_layers=double_layers,
        num_single_layers=single_layers,
        attention_head_dim=32,
        num_attention_heads=heads,
        joint_attention_dim=t5_dim,
        pooled_projection_dim=pooled_dim,
        guidance_embeds=False,
        axes_dims_rope=(8, 12, 12),
    )


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    # The toy latent is 16 tokens; FLUX's resolution-dependent shift is calibrated
    # for 256-4096 tokens, so a fixed shift of 1 (no shift) is used instead.
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)


def t5_ids(tokenizer, prompts: list[str], max_len: int) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=max_len, truncation=True,
                     return_tensors="pt").input_ids


@torch.no_grad()
def encode_prompts_t5(t5: T5EncoderModel, ids: torch.Tensor) -> torch.Tensor:
    return t5(ids).last_hidden_state


def pretrain_flux(transformer, t5: T5EncoderModel, t5_tokenizer, clip_encoder, clip_tokenizer,
                  latents: torch.Tensor, samples: list[Sample], cfg: PretrainConfig, max_len: int,
                  train_t5: bool = True) -> list[float]:
    """With `train_t5` the T5 encoder is trained jointly (the toy world has no pre-trained T5);
    without, the transformer alone learns on the frozen T5's states. CLIP stays frozen."""
    captions, cap_idx = caption_index(samples)
    _, pooled = encode_prompts_clip(clip_encoder, clip_tokenizer, captions)
    ids = t5_ids(t5_tokenizer, captions, max_len)
    attribute = attribute_positions(t5_tokenizer, ids)
    objective = FlowMatchingObjective()
    g = torch.Generator().manual_seed(cfg.seed)
    # A frozen T5 gives every caption one state, computed once (as pretrain_sd's CLIP states).
    frozen = None if train_t5 else encode_prompts_t5(t5, ids)

    def loss(step: int) -> torch.Tensor:
        idx = torch.randint(0, len(samples), (cfg.batch,), generator=g)
        c = cap_idx[idx].clone()
        c[torch.rand(cfg.batch, generator=g) < cfg.p_uncond] = 0
        pooled_c = c
        if cfg.p_drop_pooled > 0:  # no draw otherwise: the built toy FLUX stays bit-identical
            pooled_c = c.clone()
            pooled_c[torch.rand(cfg.batch, generator=g) < cfg.p_drop_pooled] = 0
        states = t5(ids[c]).last_hidden_state if frozen is None else frozen[c]
        prompt_embeds = drop_attribute_states(states, attribute[c], cfg.p_drop_attribute, g)
        return objective.loss(transformer, latents[idx], prompt_embeds, pooled[pooled_c], g)

    transformer.train()
    t5.train(train_t5)
    params = list(transformer.parameters()) + (list(t5.parameters()) if train_t5 else [])
    losses = train_steps(params, loss, cfg.steps, cfg.lr, warmup=100,
                         desc="toy-flux" if train_t5 else "toy-flux on a frozen T5")
    transformer.eval()
    t5.eval()
    return losses


def flux_prediction(transformer, t5: T5EncoderModel, clip_encoder, latents: torch.Tensor):
    """predict(idx, [t5 ids, clip ids], noise_seed): the transformer's output for training samples
    `idx` at noise and sigmas drawn from `noise_seed`, for toy/unseen_rows.py. Sigmas are uniform
    rather than pre-training's logit-normal: the stage asks for no change at every noise level."""
    objective = FlowMatchingObjective()

    def predict(idx: torch.Tensor, ids: list[torch.Tensor], noise_seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(noise_seed)
        x = latents[idx]
        noise = torch.randn(x.shape, generator=g)
        sigma = torch.rand(len(idx), generator=g)
        return objective.prediction(transformer, x, noise, sigma, t5(ids[0]).last_hidden_state,
                                    clip_encoder(ids[1]).pooler_output)

    return predict


def assemble_flux(vae, clip_encoder, clip_tokenizer, t5, t5_tokenizer, transformer) -> FluxPipeline:
    return FluxPipeline(
        scheduler=flux_scheduler(), vae=vae, text_encoder=clip_encoder, tokenizer=clip_tokenizer,
        text_encoder_2=t5, tokenizer_2=t5_tokenizer, transformer=transformer,
    )
