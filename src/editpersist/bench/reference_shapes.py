"""SD 1.4 at its real sizes with random weights, for size checks and benchmarks (nothing is
downloaded): built from the published configurations the sizing ships
(editpersist.sizing.architectures)."""

from __future__ import annotations


def sd14_components(vocab_size: int = 49408, device: str = "cpu"):
    """(unet, text_encoder, vae) of SD 1.4's shapes with random weights ("meta": no memory);
    the text encoder's vocabulary resized to `vocab_size` (a toy tokenizer's)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..sizing.architectures import build, load_config

    unet, vae = build("sd14", "unet", device=device), build("sd14", "vae", device=device)
    with torch.device(device):
        text = CLIPTextModel(CLIPTextConfig(**{**load_config("sd14", "text_encoder"), "vocab_size": vocab_size}))
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
