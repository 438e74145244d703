"""SDXL: two CLIP text encoders (the second with projection) and a larger UNet."""

from .base import ModelFamily
from .sd import CROSS_ATTN_KV

FAMILY = ModelFamily(
    name="sdxl",
    pipeline_class="StableDiffusionXLPipeline",
    denoiser="unet",
    text_encoders=("text_encoder", "text_encoder_2"),
    tokenizers=("tokenizer", "tokenizer_2"),
    objective="denoising",
    uce_targets=(("tokens", "unet", CROSS_ATTN_KV),),
    lora_targets=("to_q", "to_k", "to_v", "to_out.0"),
    lora_text_encoders=("text_encoder", "text_encoder_2"),
    gpu_precision="bf16",
)
