"""LoRA and DoRA adapters through peft, saved in diffusers' format.

Dropout is 0 so that peft's DoRA reuses the base layer's result (design.md section 6);
the adapter initialisation is gaussian as in diffusers' LoRA examples.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from ..io import atomic_dir

ADAPTER = "editpersist"


def attach_adapter(denoiser: torch.nn.Module, targets: tuple[str, ...], rank: int, alpha: float | None,
                   dora: bool) -> list[torch.nn.Parameter]:
    """Add a LoRA (or DoRA) adapter to the denoiser; return its trainable parameters (in fp32)."""
    cfg = LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian", target_modules=list(targets),
                     lora_dropout=0.0, use_dora=dora)
    denoiser.requires_grad_(False)
    denoiser.add_adapter(cfg, adapter_name=ADAPTER)
    params = [p for n, p in denoiser.named_parameters() if "lora" in n]
    for p in params:
        p.data = p.data.float()  # trainable adapter weights stay fp32 under mixed precision
        p.requires_grad_(True)
    return params


def adapter_state(denoiser: torch.nn.Module) -> dict[str, torch.Tensor]:
    from diffusers.utils import convert_state_dict_to_diffusers

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(denoiser, adapter_name=ADAPTER))


def write_adapter(pipe, family, directory: Path) -> None:
    """Write pytorch_lora_weights.safetensors into `directory` (the caller makes it atomic)."""
    layers = adapter_state(family.denoiser_of(pipe))
    kwarg = "unet_lora_layers" if family.denoiser == "unet" else "transformer_lora_layers"
    type(pipe).save_lora_weights(directory, **{kwarg: layers}, safe_serialization=True)


def save_adapter(pipe, family, out_dir: Path) -> None:
    """An adapter directory loadable with `pipe.load_lora_weights(out_dir)`, written atomically."""
    with atomic_dir(out_dir) as tmp:
        write_adapter(pipe, family, tmp)
