"""SDXL: two CLIP text encoders (the second with projection) and a larger UNet."""

from dataclasses import dataclass

import torch

from .base import ModelFamily, ReferenceCosts, TextSite
from .sd import CROSS_ATTN_KV
from .tiny import TEXT_WIDTH, tiny_clip, tiny_vae


@dataclass(frozen=True)
class SDXLFamily(ModelFamily):
    def encode_prompts(self, pipe, prompts: list[str]) -> dict[str, torch.Tensor]:
        emb, _, pooled, _ = pipe.encode_prompt(prompt=prompts, device=pipe.device, num_images_per_prompt=1,
                                               do_classifier_free_guidance=False)
        return {"prompt_embeds": emb, "pooled": pooled}

    def added_conditioning(self, pooled: torch.Tensor | None, size: int) -> dict:
        """The pooled text and the (original size, crop, target size) ids of a square image."""
        time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=pooled.dtype, device=pooled.device)
        return {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids.repeat(len(pooled), 1)}}

    def refact_sites(self, layer: int, pooled_clip_layer: int | None = None):
        # The second encoder is a CLIPTextModelWithProjection: its layers sit under text_model.
        first = super().refact_sites(layer)[0]
        clip_2 = f"text_model.{first.block}"
        return [first, TextSite("text_encoder_2", "tokenizer_2", clip_2, f"{clip_2}.mlp.fc2", "eos")]

    def published_scheduler(self):
        """SDXL base 1.0's scheduler_config.json."""
        from diffusers import EulerDiscreteScheduler

        return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                      num_train_timesteps=1000, prediction_type="epsilon", steps_offset=1,
                                      timestep_spacing="leading", interpolation_type="linear",
                                      use_karras_sigmas=False)

    def tiny_pipeline(self, tokenizers: dict, scheduler):
        from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

        tok, tok_2 = tokenizers["tokenizer"], tokenizers["tokenizer_2"]
        te1, te2 = tiny_clip(tok), tiny_clip(tok_2, projection=True)  # built first: the seed's draws keep their order
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=2 * TEXT_WIDTH, attention_head_dim=2, norm_num_groups=8,
            transformer_layers_per_block=(1, 2), addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=8 * 6 + TEXT_WIDTH,
        )
        return StableDiffusionXLPipeline(vae=tiny_vae(4), text_encoder=te1, text_encoder_2=te2, tokenizer=tok,
                                         tokenizer_2=tok_2, unet=unet, scheduler=scheduler)


FAMILY = SDXLFamily(
    name="sdxl",
    pipeline_class="StableDiffusionXLPipeline",
    denoiser="unet",
    text_encoders=("text_encoder", "text_encoder_2"),
    tokenizers=("tokenizer", "tokenizer_2"),
    tokenizer_kinds=("clip", "clip"),
    uce_targets=(("tokens", "unet", CROSS_ATTN_KV),),
    lora_targets=("to_q", "to_k", "to_v", "to_out.0"),
    lora_text_encoders=("text_encoder", "text_encoder_2"),
    gpu_precision="bf16",
    # The README of github.com/fal-ai/stable-diffusion-benchmarks, A100 80G SXM, fp16, 50 steps
    # with CFG, batch 1: SDXL 1024x1024 5.933 s/image. Load time assumed; the base 1.0 repo in
    # fp16 (~6.9 GB).
    costs=ReferenceCosts(a100_step_s=5.933 / 50, native_resolution=1024, load_s=25.0, checkpoint_bytes=6.9e9),
)
