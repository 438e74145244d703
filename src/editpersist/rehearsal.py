"""The rehearsal of the published grid: tiny *random* pipelines of the real architectures, and
every other input a real run reads, built from nothing (config/rehearsal.yaml).

Each model is saved with `save_pretrained`, so its folder looks exactly like a downloaded
checkpoint: SD 1.x (UNet + CLIP, PNDM scheduler), SDXL (two CLIP encoders, the second with
projection; Euler scheduler), FLUX (CLIP + T5, MMDiT, flow-matching Euler scheduler), with
the schedulers' published configurations and CLIP's full 49,408-token vocabulary at 77
tokens. The numbers such models produce mean nothing; the code paths are the paper grid's.
Also made here: a random open_clip model directory for the judge, a DreamBooth-style folder
of photos, a reference folder for FID and the text corpus of ReFACT's statistics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .io import atomic_dir

FAMILIES = ("sd", "sdxl", "flux")
# Small enough to build, fine-tune and sample in seconds on a CPU.
TEXT_WIDTH = 32
T5_MAX_LENGTH = 64
T5_VOCAB_SIZE = 400


def sd_scheduler():
    """Stable Diffusion v1.4's scheduler_config.json."""
    from diffusers import PNDMScheduler

    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                         set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, trained_betas=None)


def sdxl_scheduler():
    """SDXL base 1.0's scheduler_config.json."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  num_train_timesteps=1000, prediction_type="epsilon", steps_offset=1,
                                  timestep_spacing="leading", interpolation_type="linear", use_karras_sigmas=False)


def flux_schnell_scheduler():
    """FLUX.1-schnell's scheduler_config.json."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)


def tiny_vae(latent_channels: int, shift_factor: float | None = None):
    from diffusers import AutoencoderKL

    return AutoencoderKL(shift_factor=shift_factor, block_out_channels=(8, 16),
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         latent_channels=latent_channels, norm_num_groups=8, sample_size=32)


def tiny_clip(tok, width: int = TEXT_WIDTH, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=tok.model_max_length, projection_dim=width,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def tiny_sd(tok, scheduler, width: int = TEXT_WIDTH):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=width, attention_head_dim=2, norm_num_groups=8,
    )
    return StableDiffusionPipeline(vae=tiny_vae(4), text_encoder=tiny_clip(tok, width), tokenizer=tok, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def tiny_sdxl(tok, scheduler, width: int = TEXT_WIDTH):
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    te1, te2 = tiny_clip(tok, width), tiny_clip(tok, width, projection=True)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * width, attention_head_dim=2, norm_num_groups=8, transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=8 * 6 + width,
    )
    return StableDiffusionXLPipeline(vae=tiny_vae(4), text_encoder=te1, text_encoder_2=te2, tokenizer=tok,
                                     tokenizer_2=tok, unet=unet, scheduler=scheduler)


def tiny_flux(tok, t5_tok, scheduler, width: int = TEXT_WIDTH):
    from diffusers import FluxPipeline

    from .toy.diffusion import build_flux_transformer, build_t5

    t5 = build_t5(len(t5_tok), width=width)
    transformer = build_flux_transformer(16, t5_dim=width, pooled_dim=width, width=64, double_layers=1,
                                         single_layers=1)
    return FluxPipeline(scheduler=scheduler, vae=tiny_vae(16, shift_factor=0.1), text_encoder=tiny_clip(tok, width),
                        tokenizer=tok, text_encoder_2=t5, tokenizer_2=t5_tok, transformer=transformer)


def build_pipeline(family: str, corpus: list[str], out: Path, seed: int = 0) -> None:
    """A random pipeline of `family`'s architecture, written as a model folder. Its CLIP
    tokenizer is CLIP's own; FLUX's T5 tokenizer is trained on `corpus` (every character of it
    is covered; others become <unk>, as with T5's own vocabulary)."""
    import tempfile

    from .toy.tokenizers import build_full_clip_tokenizer, build_t5_tokenizer

    if family not in FAMILIES:
        raise ValueError(f"rehearsal: unknown family {family!r}; expected one of {FAMILIES}")
    with tempfile.TemporaryDirectory() as scratch:
        tok = build_full_clip_tokenizer(Path(scratch) / "clip")
        torch.manual_seed(seed)
        if family == "sd":
            pipe = tiny_sd(tok, sd_scheduler())
        elif family == "sdxl":
            pipe = tiny_sdxl(tok, sdxl_scheduler())
        else:
            t5_tok = build_t5_tokenizer(corpus, Path(scratch) / "t5", vocab_size=T5_VOCAB_SIZE,
                                        normalization="identity")
            t5_tok.model_max_length = T5_MAX_LENGTH
            pipe = tiny_flux(tok, t5_tok, flux_schnell_scheduler())
        with atomic_dir(out) as tmp:
            pipe.save_pretrained(tmp)


def build_judge(out: Path, seed: int = 0) -> None:
    """A random open_clip CLIP (the toy judge's architecture at CLIP's 77-token context), saved
    as an open_clip local directory: the judge path of a real run loads it unchanged."""
    import open_clip

    from .toy.judge import judge_model_cfg, save_open_clip_dir

    torch.manual_seed(seed)
    cfg = judge_model_cfg(width=32, context_length=77)
    save_open_clip_dir(open_clip.model.CLIP(**cfg).eval(), cfg, out)


def smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """`n` RGB images of random colour gradients (photo-like: no pixel noise), NHWC uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    out = []
    for _ in range(n):
        corners = rng.uniform(0, 255, size=(4, 3))
        img = (corners[0] * ((1 - x) * (1 - y))[..., None] + corners[1] * (x * (1 - y))[..., None]
               + corners[2] * ((1 - x) * y)[..., None] + corners[3] * (x * y)[..., None])
        out.append(img.round().clip(0, 255).astype(np.uint8))
    return np.stack(out)


def write_image_folder(out: Path, n: int, size: int, seed: int) -> None:
    """PNG files 00.png, 01.png, ... (google/dreambooth's naming) of `smooth_images`."""
    with atomic_dir(out) as tmp:
        for i, img in enumerate(smooth_images(n, size, seed)):
            Image.fromarray(img).save(tmp / f"{i:02d}.png")


def corpus_texts(cases: dict, captions: list[str]) -> list[str]:
    """Every prompt and request text of the grid's edit cases, then the quality captions."""
    from .evaluation.prompts import case_probes

    every = [c for task_cases in cases.values() for c in task_cases]
    texts = [p.prompt for c in every for _, p in case_probes(c)]
    texts += [t for c in every for r in c.requests for t in (r.source, r.target, r.original) if t]
    return texts + captions


def write_corpus(texts: list[str], out: Path) -> None:
    """One text per line, as ReFACT's statistics read a corpus (WikiText-103 in the paper)."""
    from .io import atomic_path

    lines = list(dict.fromkeys(" ".join(t.split()) for t in texts if t.strip()))
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
