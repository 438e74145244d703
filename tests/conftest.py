"""Shared fixtures: tiny random-weight pipelines of every family, built on the fly.

Nothing is downloaded and no weights are committed: the tokenizers come from the
toy world's offline builders, the models are random and a few hundred KB.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)

from editpersist.toy.build import training_sentences  # noqa: E402
from editpersist.toy.tokenizers import build_clip_tokenizer, build_t5_tokenizer  # noqa: E402
from editpersist.toy.world import WorldSpec, sample_captions  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory) -> dict[str, Path]:
    import numpy as np

    root = tmp_path_factory.mktemp("tokenizers")
    spec = WorldSpec()
    build_clip_tokenizer(spec.words(), root / "clip", model_max_length=16)
    samples = sample_captions(spec, 500, np.random.default_rng(0))
    t5 = build_t5_tokenizer(training_sentences(samples, spec), root / "t5", vocab_size=128)
    t5.model_max_length = 12
    t5.save_pretrained(root / "t5")
    return {"clip": root / "clip", "t5": root / "t5"}


def _tiny_vae(latent_channels: int, shift_factor: float | None = None):
    from diffusers import AutoencoderKL

    return AutoencoderKL(shift_factor=shift_factor, 
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=latent_channels, norm_num_groups=8,
        sample_size=32,
    )


def _tiny_clip(tok, width: int = 32, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=tok.model_max_length, projection_dim=width,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def build_tiny_sd(out: Path, tokenizer_dir: Path) -> Path:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    from editpersist.toy.diffusion import sd_schedulers

    torch.manual_seed(0)
    tok = CLIPTokenizer.from_pretrained(tokenizer_dir)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8,
    )
    pipe = StableDiffusionPipeline(vae=_tiny_vae(4), text_encoder=_tiny_clip(tok), tokenizer=tok, unet=unet,
                                   scheduler=sd_schedulers()[1], safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(out)
    return out


def build_tiny_sdxl(out: Path, tokenizer_dir: Path) -> Path:
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    from editpersist.toy.diffusion import sd_schedulers

    torch.manual_seed(0)
    tok = CLIPTokenizer.from_pretrained(tokenizer_dir)
    te1, te2 = _tiny_clip(tok, 32), _tiny_clip(tok, 32, projection=True)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=2, norm_num_groups=8, transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=8 * 6 + 32,
    )
    pipe = StableDiffusionXLPipeline(vae=_tiny_vae(4), text_encoder=te1, text_encoder_2=te2, tokenizer=tok,
                                     tokenizer_2=tok, unet=unet, scheduler=sd_schedulers()[1])
    pipe.save_pretrained(out)
    return out


def build_tiny_flux(out: Path, tokenizer_dirs: dict[str, Path]) -> Path:
    from transformers import CLIPTokenizer, T5Tokenizer

    from editpersist.toy.diffusion import assemble_flux, build_flux_transformer, build_t5

    torch.manual_seed(0)
    tok = CLIPTokenizer.from_pretrained(tokenizer_dirs["clip"])
    t5_tok = T5Tokenizer.from_pretrained(tokenizer_dirs["t5"])
    t5 = build_t5(len(t5_tok), width=32)
    transformer = build_flux_transformer(16, t5_dim=32, pooled_dim=32, width=64, double_layers=1, single_layers=1)
    pipe = assemble_flux(_tiny_vae(16, shift_factor=0.1), _tiny_clip(tok), tok, t5, t5_tok, transformer)
    pipe.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory, tokenizer_dirs) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "sd": build_tiny_sd(root / "sd", tokenizer_dirs["clip"]),
        "sdxl": build_tiny_sdxl(root / "sdxl", tokenizer_dirs["clip"]),
        "flux": build_tiny_flux(root / "flux", tokenizer_dirs),
    }


# ---- the workflow on the tiny toy config ------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "tests/data/tiny_toy.yaml"


def run_snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: int = 1500):
    """`snakemake` on the repository's Snakefile in `workdir`, as a user runs it."""
    import subprocess
    import sys

    env = {**(env or os.environ), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                           str(workdir), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def new_workdir(path: Path) -> Path:
    # The Snakefile's default `configfile:` is read relative to the working directory.
    path.mkdir(parents=True, exist_ok=True)
    (path / "config").symlink_to(ROOT / "config")
    return path


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """The tiny toy world and the study on it, run once with `snakemake --cores 2`: the
    reference that the cluster, resume and determinism tests compare against."""
    wd = new_workdir(tmp_path_factory.mktemp("tiny-study"))
    res = run_snakemake(wd, "--cores", "2", "--configfile", str(TINY_CONFIG))
    assert res.returncode == 0, res.stderr[-5000:]
    (wd / "snakemake.stderr").write_text(res.stderr)
    return wd


def study_without_results(reference: Path, dest: Path) -> Path:
    """A copy of `reference` that keeps the built toy world (same files, times and
    Snakemake records) and nothing of the study, so a run there redoes only the study."""
    import shutil

    shutil.copytree(reference, dest, symlinks=True)
    for top in ("results", "logs", "benchmarks"):
        for path in (dest / top).iterdir():
            if path.name != "toy":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(dest / ".snakemake" / "log", ignore_errors=True)
    return dest
