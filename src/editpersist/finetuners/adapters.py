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


# Attention projections of the CLIP text encoders (diffusers' train_dreambooth_lora*.py).
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def attach_adapter(module: torch.nn.Module, targets: tuple[str, ...], rank: int, alpha: float | None,
                   dora: bool) -> list[torch.nn.Parameter]:
    """Add a LoRA (or DoRA) adapter to a denoiser or text encoder; return its trainable parameters
    (in fp32)."""
    cfg = LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian", target_modules=list(targets),
                     lora_dropout=0.0, use_dora=dora)
    module.requires_grad_(False)
    module.add_adapter(cfg, adapter_name=ADAPTER)
    params = [p for n, p in module.named_parameters() if "lora" in n]
    for p in params:
        p.data = p.data.float()  # trainable adapter weights stay fp32 under mixed precision
        p.requires_grad_(True)
    return params


def adapter_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    from diffusers.utils import convert_state_dict_to_diffusers

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(module, adapter_name=ADAPTER))


def has_adapter(module: torch.nn.Module) -> bool:
    return ADAPTER in getattr(module, "peft_config", {})


def adapter_layers(pipe, family) -> dict[str, dict[str, torch.Tensor]]:
    """The adapter's weights per pipeline component that carries one (denoiser, text encoders)."""
    components = (family.denoiser,) + family.lora_text_encoders
    return {c: adapter_state(getattr(pipe, c)) for c in components if has_adapter(getattr(pipe, c))}


def packed_adapter_state(pipe, family) -> dict[str, torch.Tensor]:
    """All adapter weights keyed '<component>.<name>', the layout of the saved LoRA file."""
    return {f"{c}.{k}": v for c, layers in adapter_layers(pipe, family).items() for k, v in layers.items()}


def write_adapter(pipe, family, directory: Path) -> None:
    """Write pytorch_lora_weights.safetensors into `directory` (the caller makes it atomic)."""
    kwargs = {f"{c}_lora_layers": layers for c, layers in adapter_layers(pipe, family).items()}
    type(pipe).save_lora_weights(directory, **kwargs, safe_serialization=True)


def save_adapter(pipe, family, out_dir: Path) -> None:
    """An adapter directory loadable with `pipe.load_lora_weights(out_dir)`, written atomically."""
    with atomic_dir(out_dir) as tmp:
        write_adapter(pipe, family, tmp)
