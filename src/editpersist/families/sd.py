"""Stable Diffusion 1.x / 2.x: one CLIP text encoder, a cross-attention UNet."""

from .base import ModelFamily

# attn2 is the cross-attention of every transformer block; to_k/to_v read the text
# embedding, so they are where UCE and TIME write (SD1.4: 16 blocks, 32 matrices).
CROSS_ATTN_KV = r".*attn2\.to_(k|v)"

FAMILY = ModelFamily(
    name="sd",
    pipeline_class="StableDiffusionPipeline",
    denoiser="unet",
    text_encoders=("text_encoder",),
    tokenizers=("tokenizer",),
    objective="denoising",
    uce_targets=(("tokens", "unet", CROSS_ATTN_KV),),
    lora_targets=("to_q", "to_k", "to_v", "to_out.0"),
    gpu_precision="fp16",
)
