"""Fine-tuning hyperparameters; defaults follow diffusers' DreamBooth/LoRA examples (design.md section 6)."""

from __future__ import annotations

from dataclasses import dataclass

from .methods import FINETUNERS, FinetuneMethod


@dataclass(frozen=True)
class FinetuneConfig:
    method: str
    steps: int  # always explicit
    lr: float
    batch: int = 4
    precision: str = "fp32"  # always explicit; "bf16"/"fp16" use autocast on GPU, trainable params stay fp32
    rank: int = 4
    alpha: float | None = None  # None: alpha = rank
    seed: int = 0
    gradient_checkpointing: bool = False
    prior_weight: float = 1.0  # DreamBooth prior-preservation loss weight
    snapshots: tuple[float, ...] = ()  # fractions of training at which to save intermediate states
    # LoRA/DoRA only: also adapt the CLIP text encoder(s) (diffusers' --train_text_encoder),
    # with the same rank and learning rate; the captions are then encoded at every step.
    train_text_encoder: bool = False
    # Move the frozen text encoders and VAE to the CPU once the captions and latents are
    # encoded, for the training steps (the memory the diffusers examples save by caching them).
    offload_frozen: bool = False

    def __post_init__(self):
        if self.method not in FINETUNERS:
            raise ValueError(f"unknown fine-tuning method {self.method!r}; expected one of {sorted(FINETUNERS)}")
        if self.train_text_encoder and not self.uses_adapter:
            raise ValueError(f"train_text_encoder is for lora/dora adapters, not {self.method!r}")
        if self.train_text_encoder and self.offload_frozen:
            raise ValueError("offload_frozen needs frozen text encoders; train_text_encoder trains them")

    @property
    def spec(self) -> FinetuneMethod:
        return FINETUNERS[self.method]

    @property
    def uses_adapter(self) -> bool:
        return self.spec.adapter
