"""Stable Diffusion 1.x / 2.x: one CLIP text encoder, a cross-attention UNet."""

from dataclasses import dataclass

from .base import ModelFamily, ReferenceCosts
from .tiny import TEXT_WIDTH, tiny_clip, tiny_vae

# attn2 is the cross-attention of every transformer block; to_k/to_v read the text
# embedding, so they are where UCE and TIME write (SD1.4: 16 blocks, 32 matrices).
CROSS_ATTN_KV = r".*attn2\.to_(k|v)"


@dataclass(frozen=True)
class SDFamily(ModelFamily):
    def published_scheduler(self):
        """Stable Diffusion v1.4's scheduler_config.json."""
        from diffusers import PNDMScheduler

        return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                             num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
                             trained_betas=None)

    def tiny_pipeline(self, tokenizers: dict, scheduler):
        from diffusers import StableDiffusionPipeline, UNet2DConditionModel

        tok = tokenizers["tokenizer"]
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TEXT_WIDTH, attention_head_dim=2, norm_num_groups=8,
        )
        return StableDiffusionPipeline(vae=tiny_vae(4), text_encoder=tiny_clip(tok), tokenizer=tok, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)


FAMILY = SDFamily(
    name="sd",
    pipeline_class="StableDiffusionPipeline",
    denoiser="unet",
    text_encoders=("text_encoder",),
    tokenizers=("tokenizer",),
    uce_targets=(("tokens", "unet", CROSS_ATTN_KV),),
    lora_targets=("to_q", "to_k", "to_v", "to_out.0"),
    gpu_precision="fp16",
    # The README of github.com/fal-ai/stable-diffusion-benchmarks, A100 80G SXM, diffusers +
    # torch 2.1 SDPA, fp16, 50 steps with CFG, batch 1: SD1.5 512x512 1.591 s/image. Load time
    # assumed; the checkpoint is the SD1.4 diffusers repo in fp16 (~2.0 GB).
    costs=ReferenceCosts(a100_step_s=1.591 / 50, native_resolution=512, load_s=10.0, checkpoint_bytes=2.0e9),
)
