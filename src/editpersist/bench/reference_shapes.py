"""Architectures of the real models at their real sizes, for size checks and benchmarks with
random weights (nothing is downloaded). Values from the public model configs."""

from __future__ import annotations

# Stable Diffusion v1.4: UNet, CLIP ViT-L/14 text encoder, VAE.
SD14_UNET = dict(
    sample_size=64, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8,
)
SD14_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=77)
SD14_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2)


def sd14_components(vocab_size: int = 49408, device: str = "cpu"):
    """(unet, text_encoder, vae) of SD 1.4's shapes with random weights ("meta": no memory)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device(device):
        unet = UNet2DConditionModel(**SD14_UNET)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, **SD14_TEXT))
        vae = AutoencoderKL(**SD14_VAE)
    return unet, text, vae


def sd14_uce_parameters() -> tuple[int, int]:
    """(parameters UCE edits, parameters of the whole model) at SD 1.4's shapes."""
    from ..families import get_family

    unet, text, vae = sd14_components(device="meta")

    class _UNetOnly:  # uce_modules reads pipe.unet only
        pass

    pipe = _UNetOnly()
    pipe.unet = unet
    edited = sum(m.weight.numel() for m in get_family("sd").uce_modules(pipe).values())
    return edited, sum(p.numel() for m in (unet, text, vae) for p in m.parameters())


def sd14_pipeline():
    """A StableDiffusionPipeline of SD 1.4's shapes with random weights, tokenised with the toy
    world's CLIP tokenizer at SD's 77 tokens (its vocabulary sizes the text encoder)."""
    import tempfile
    from pathlib import Path

    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from ..toy.tokenizers import build_clip_tokenizer
    from ..toy.world import WorldSpec

    with tempfile.TemporaryDirectory() as tmp:
        tok = build_clip_tokenizer(WorldSpec().words(), Path(tmp), model_max_length=77)
    unet, text, vae = sd14_components(vocab_size=len(tok))
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler(clip_sample=False), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
