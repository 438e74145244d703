"""The real models' architectures as data: each component's published configuration
(`architectures/<arch>/<component>.json`, sources in architectures/SOURCES.md), built with no
memory (on the meta device) in a given dtype, and the published parameter counts they must
reproduce.

Architectures: `sd14` (Stable Diffusion v1.4), `sdxl` (SDXL base 1.0), `flux-schnell`
(FLUX.1-schnell) with the pipeline's component names, and the judge `ViT-bigG-14` (open_clip)
with components `visual` and `text`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ..errors import ConfigError
from ..runtime import pick_dtype

ARCH_DIR = Path(__file__).parent / "architectures"

# Component -> how it is built, per architecture (pipeline component names; the scheduler's
# file is kept with them but holds no weights).
ARCHITECTURES: dict[str, dict[str, str]] = {
    "sd14": {"unet": "unet", "text_encoder": "clip_text", "vae": "vae"},
    "sdxl": {"unet": "unet", "text_encoder": "clip_text", "text_encoder_2": "clip_text_projection", "vae": "vae"},
    "flux-schnell": {"transformer": "flux_transformer", "text_encoder": "clip_text", "text_encoder_2": "t5_encoder",
                     "vae": "vae"},
    "ViT-bigG-14": {"visual": "open_clip_visual", "text": "open_clip_text"},
}
# The model family (editpersist.families) each diffusion architecture belongs to.
ARCH_FAMILY = {"sd14": "sd", "sdxl": "sdxl", "flux-schnell": "flux"}
JUDGE = "ViT-bigG-14"
DTYPE_NAMES = ("fp32", "bf16", "fp16")


def check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ConfigError(f"architecture: unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")


def check_component(arch: str, component: str) -> None:
    check_arch(arch)
    if component not in ARCHITECTURES[arch]:
        raise ConfigError(f"architecture {arch}: no component {component!r}; expected one of "
                          f"{sorted(ARCHITECTURES[arch])}")


def torch_dtype(name: str) -> torch.dtype:
    """'fp32' | 'bf16' | 'fp16' -> the torch dtype (as runtime.pick_dtype names them)."""
    if name not in DTYPE_NAMES:
        raise ConfigError(f"dtype: unknown dtype {name!r}; expected one of {list(DTYPE_NAMES)}")
    return pick_dtype("cuda", name)


def components(arch: str) -> tuple[str, ...]:
    """The components that hold weights, in the pipeline's order."""
    check_arch(arch)
    return tuple(ARCHITECTURES[arch])


def denoiser_of(arch: str) -> str:
    check_arch(arch)
    from ..families import get_family

    return get_family(ARCH_FAMILY[arch]).denoiser


def config_path(arch: str, component: str) -> Path:
    check_arch(arch)
    if arch == JUDGE:
        return ARCH_DIR / arch / "open_clip.json"
    if component != "scheduler":
        check_component(arch, component)
    return ARCH_DIR / arch / f"{component}.json"


def load_config(arch: str, component: str) -> dict:
    """The component's published configuration (the scheduler's too: component 'scheduler')."""
    with open(config_path(arch, component)) as f:
        return json.load(f)


# ------------------------------------------------------------------------ builders ----

def _unet(cfg: dict):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_config(cfg)


def _flux_transformer(cfg: dict):
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel.from_config(cfg)


def _vae(cfg: dict):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(cfg)


def _clip_text(cfg: dict):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**cfg))


def _clip_text_projection(cfg: dict):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(CLIPTextConfig(**cfg))


def _t5_encoder(cfg: dict):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(**cfg))


def _open_clip_visual(cfg: dict):
    from open_clip.model import _build_vision_tower

    return _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"])


def _open_clip_text(cfg: dict):
    from open_clip.model import _build_text_tower

    return _build_text_tower(cfg["embed_dim"], cfg["text_cfg"])


BUILDERS = {"unet": _unet, "flux_transformer": _flux_transformer, "vae": _vae, "clip_text": _clip_text,
            "clip_text_projection": _clip_text_projection, "t5_encoder": _t5_encoder,
            "open_clip_visual": _open_clip_visual, "open_clip_text": _open_clip_text}


def build(arch: str, component: str, dtype: str = "fp32", device: str = "meta",
          overrides: dict | None = None) -> torch.nn.Module:
    """The component with every floating parameter and buffer in `dtype`, on `device` (the
    meta device by default: no memory); `overrides` replace configuration values (fewer
    repeated blocks, for footprint's depth extrapolation). Built under torch.set_default_dtype
    rather than cast afterwards, since a cast of fake tensors fails."""
    check_component(arch, component)
    target = torch_dtype(dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(target)
    try:
        with torch.device(device):
            module = BUILDERS[ARCHITECTURES[arch][component]]({**load_config(arch, component), **(overrides or {})})
    finally:
        torch.set_default_dtype(previous)
    return module.eval()


def _unique_parameters(module: torch.nn.Module):
    return {id(p): p for p in module.parameters()}.values()  # tied weights (T5's shared embedding) once


@lru_cache(maxsize=None)
def parameter_count(arch: str, component: str) -> int:
    return sum(p.numel() for p in _unique_parameters(build(arch, component)))


def parameter_bytes(arch: str, component: str, dtype: str) -> int:
    """Bytes of the component's weights in `dtype`."""
    return parameter_count(arch, component) * torch_dtype(dtype).itemsize


# ------------------------------------------------------------ published counts ----

@dataclass(frozen=True)
class Published:
    """A published parameter count: `figure` as printed ('859,520,964', '2.6B', '694.66M'),
    where it is printed."""

    figure: str
    source: str

    def agrees(self, count: int) -> bool:
        """The count, rounded as the figure is, equals it."""
        m = re.fullmatch(r"([\d,]+(?:\.(\d+))?)([MB]?)", self.figure)
        if not m:
            raise ValueError(f"unreadable published figure {self.figure!r}")
        value = float(m.group(1).replace(",", ""))
        unit = {"": 1, "M": 10**6, "B": 10**9}[m.group(3)]
        return round(count / unit, len(m.group(2) or "")) == value


_FASTAI = ("fast.ai forums, 'Stable Diffusion Parameter Budget Allocation' "
           "(forums.fast.ai/t/stable-diffusion-parameter-budget-allocation/101515): counted on the "
           "CompVis/stable-diffusion-v1-4 pipeline of the fast.ai course notebook")
_OPEN_CLIP = ("open_clip docs/model_profile.csv (github.com/mlfoundations/open_clip, commit 3b37473b), "
              "row ViT-bigG-14")

PUBLISHED_PARAMETERS: dict[tuple[str, str], Published] = {
    ("sd14", "unet"): Published("859,520,964", _FASTAI),
    ("sd14", "text_encoder"): Published("123,060,480", _FASTAI),
    ("sd14", "vae"): Published("83,653,863", _FASTAI),
    ("sdxl", "unet"): Published("2.6B", "SDXL paper (Podell et al. 2023, arXiv:2307.01952), Tab. 1 '# of UNet "
                                        "params'; section 2.1 of the paper as hackernoon.com/improving-stable-"
                                        "diffusion-architecture reprints it"),
    ("sdxl", "text_encoder"): Published("123,060,480", _FASTAI + " (the same CLIP ViT-L/14 text encoder)"),
    ("sdxl", "text_encoder_2"): Published("694.66M", _OPEN_CLIP + ", text_mparams (OpenCLIP ViT-bigG/14's text "
                                                      "tower, SDXL's second text encoder)"),
    ("sdxl", "vae"): Published("83,653,863", _FASTAI + " (the same autoencoder architecture)"),
    ("flux-schnell", "transformer"): Published("12B", "FLUX.1 [schnell] model card, 'a 12 billion parameter "
                                                      "rectified flow transformer' (github.com/black-forest-labs/"
                                                      "flux, model_cards/FLUX.1-schnell.md)"),
    ("flux-schnell", "text_encoder"): Published("123,060,480", _FASTAI + " (the same CLIP ViT-L/14 text encoder)"),
    ("flux-schnell", "text_encoder_2"): Published("4,762,310,656", "Wikipedia, 'T5 (language model)', table of "
                                                                   "T5 v1.1 sizes: XXL encoder parameters"),
    ("ViT-bigG-14", "visual"): Published("1844.91M", _OPEN_CLIP + ", image_mparams"),
    ("ViT-bigG-14", "text"): Published("694.66M", _OPEN_CLIP + ", text_mparams"),
}
# No published count was found for FLUX.1's autoencoder (16 latent channels); it builds with
# 83,819,683 parameters.
UNPUBLISHED = {("flux-schnell", "vae")}
