"""One unit of GPU work at real shapes, as a frozen, hashable record: what editpersist.sizing.
footprint measures. Each names the published architecture (architectures.ARCHITECTURES) and
the dtype of the weights on the GPU ('fp32' | 'bf16' | 'fp16'); its repr is its cache key.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .architectures import ARCH_FAMILY, JUDGE, check_component, torch_dtype

METHODS = ("lora", "dora", "full")
OPTIMIZERS = ("adamw", "adamw8bit", "adamw_bf16")


def _check_diffusion(arch: str) -> None:
    if arch not in ARCH_FAMILY:
        raise ConfigError(f"architecture: {arch!r} is not a diffusion architecture; expected one of "
                          f"{sorted(ARCH_FAMILY)}")


def _check_positive(owner: str, **values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{owner}.{key}: must be a positive integer, got {value!r}")


def _check_image(owner: str, height: int, width: int) -> None:
    _check_positive(owner, height=height, width=width)
    if height % 16 or width % 16:
        raise ConfigError(f"{owner}: height and width must be multiples of 16 (8x VAE, 2x2 FLUX patches), "
                          f"got {height}x{width}")


@dataclass(frozen=True)
class _ImageCall:
    """A call on `batch` images of `height` x `width` pixels (the subclass says which)."""

    arch: str
    batch: int
    height: int
    width: int

    def _check(self, dtype: str) -> None:
        name = type(self).__name__
        _check_diffusion(self.arch)
        _check_positive(name, batch=self.batch)
        _check_image(name, self.height, self.width)
        torch_dtype(dtype)


@dataclass(frozen=True)
class DenoiseStep(_ImageCall):
    """One call of the denoiser as the pipeline makes it in a sampling step, under no_grad:
    `batch` images, the batch doubled by classifier-free guidance when `cfg`."""

    cfg: bool
    dtype: str

    def __post_init__(self):
        self._check(self.dtype)


@dataclass(frozen=True)
class VaeDecode(_ImageCall):
    """The pipeline's final decode of `batch` latents to images, under no_grad."""

    dtype: str

    def __post_init__(self):
        self._check(self.dtype)


@dataclass(frozen=True)
class VaeEncode(_ImageCall):
    """Encoding `batch` images to latents (the posterior mean), under no_grad."""

    dtype: str

    def __post_init__(self):
        self._check(self.dtype)


@dataclass(frozen=True)
class TextEncode:
    """`batch` prompts through one text encoder as the pipeline encodes them, under no_grad,
    padded to the encoder's length (77 CLIP tokens; FLUX's T5 at the project's sequence length)."""

    arch: str
    encoder: str
    batch: int
    dtype: str

    def __post_init__(self):
        _check_diffusion(self.arch)
        check_component(self.arch, self.encoder)
        if not self.encoder.startswith("text_encoder"):
            raise ConfigError(f"TextEncode.encoder: {self.encoder!r} is not a text encoder of {self.arch}")
        _check_positive("TextEncode", batch=self.batch)
        torch_dtype(self.dtype)


@dataclass(frozen=True)
class TrainStep:
    """One training step of the denoiser as finetuners.core runs it: the family's loss under
    autocast (`autocast`: the fine-tune's precision), zero_grad, backward, gradient clipping,
    the optimiser step; in the steady state (optimiser states and the previous step's
    gradients exist when the step starts).

    `dtype` is the pipeline's: the frozen weights of an adapter fine-tune stay in it; adapter
    weights and a full fine-tune's weights train in fp32 (finetuners.core). `prior_preservation`:
    DreamBooth's second forward on a class-image batch of the same size. `optimizer`: 'adamw'
    (torch's AdamW, as training.loop), or a memory model of 8-bit ('adamw8bit') or bf16
    ('adamw_bf16') Adam states (footprint.StateModelAdam)."""

    arch: str
    method: str
    batch: int
    height: int
    width: int
    dtype: str
    gradient_checkpointing: bool
    optimizer: str = "adamw"
    rank: int = 4
    prior_preservation: bool = False
    autocast: str = "bf16"

    def __post_init__(self):
        _check_diffusion(self.arch)
        if self.method not in METHODS:
            raise ConfigError(f"TrainStep.method: unknown method {self.method!r}; expected one of {list(METHODS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"TrainStep.optimizer: unknown optimizer {self.optimizer!r}; expected one of "
                              f"{list(OPTIMIZERS)}")
        _check_positive("TrainStep", batch=self.batch)
        if self.method != "full":
            _check_positive("TrainStep", rank=self.rank)
        _check_image("TrainStep", self.height, self.width)
        torch_dtype(self.dtype)
        torch_dtype(self.autocast)


@dataclass(frozen=True)
class RefactStep:
    """One step of ReFACT's optimisation of v (editors.refact.compute_v): the `n_prompts`
    prompts (the bare prompt and its templates) through the frozen text encoder with delta
    added at the edited layer's output, the loss, backward to delta and Adam's step on it.
    `layer`: the edited layer (backward runs from the output down to it); None sizes the first
    layer, the deepest backward."""

    arch: str
    encoder: str
    n_prompts: int
    dtype: str
    layer: int | None = None

    def __post_init__(self):
        _check_diffusion(self.arch)
        check_component(self.arch, self.encoder)
        _check_positive("RefactStep", n_prompts=self.n_prompts)
        torch_dtype(self.dtype)


@dataclass(frozen=True)
class LayerStats:
    """One batch of ReFACT's layer statistics (editors.refact.layer_stats): `batch` corpus texts
    through the text encoder under no_grad, the edited layer's inputs captured and their second
    moment added to the running sum in float64. Every token is counted (an upper bound: padding
    is dropped by the real pass)."""

    arch: str
    encoder: str
    layer: int
    batch: int
    dtype: str

    def __post_init__(self):
        _check_diffusion(self.arch)
        check_component(self.arch, self.encoder)
        _check_positive("LayerStats", batch=self.batch)
        torch_dtype(self.dtype)


@dataclass(frozen=True)
class JudgeImages:
    """The judge's (open_clip ViT-bigG-14) image tower on `batch` preprocessed 224x224 images."""

    batch: int
    dtype: str

    def __post_init__(self):
        _check_positive("JudgeImages", batch=self.batch)
        torch_dtype(self.dtype)

    @property
    def arch(self) -> str:
        return JUDGE


@dataclass(frozen=True)
class JudgeTexts:
    """The judge's text tower on `batch` prompts of 77 tokens."""

    batch: int
    dtype: str

    def __post_init__(self):
        _check_positive("JudgeTexts", batch=self.batch)
        torch_dtype(self.dtype)

    @property
    def arch(self) -> str:
        return JUDGE


@dataclass(frozen=True)
class ClosedFormSolve:
    """UCE's or TIME's closed-form edit of the family's target layers (editors.closed_form):
    sized by a closed form (footprint.closed_form_cost), not traced. `n_edit`: rows of the
    edited keys; `n_preserve`: rows of the preserved keys (one row per prompt with the
    official last-token mode)."""

    arch: str
    family: str | None = None
    n_edit: int = 77
    n_preserve: int = 7700

    def __post_init__(self):
        _check_diffusion(self.arch)
        if self.family is not None and self.family != ARCH_FAMILY[self.arch]:
            raise ConfigError(f"ClosedFormSolve.family: {self.family!r} is not the family of {self.arch} "
                              f"({ARCH_FAMILY[self.arch]!r})")
        _check_positive("ClosedFormSolve", n_edit=self.n_edit)
        if not isinstance(self.n_preserve, int) or self.n_preserve < 0:
            raise ConfigError(f"ClosedFormSolve.n_preserve: must be a non-negative integer, got {self.n_preserve!r}")


WORKLOADS = (DenoiseStep, VaeDecode, VaeEncode, TextEncode, TrainStep, RefactStep, LayerStats, JudgeImages,
             JudgeTexts, ClosedFormSolve)
