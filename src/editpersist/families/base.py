"""What every model family knows: how to load it, its precision policy, how it encodes a
prompt and is called, its training objective, and which modules editors and fine-tuners
target.

A family is a frozen description whose methods hold everything that differs between SD,
SDXL and FLUX (subclasses override them), so no code outside `families/` asks which
family it holds. The diffusers pipeline object stays the single owner of the components
(as in diffusers itself).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..io import read_json
from ..runtime import pick_dtype


@dataclass(frozen=True)
class TextSite:
    """One editable text-encoder layer of a pipeline (ReFACT's edit site): component, tokenizer,
    the transformer block holding the layer and the layer's module name."""

    component: str
    tokenizer: str
    block: str
    module: str
    pooling: str  # "eos" (CLIP pooler_output) or "mean" (T5)


@dataclass(frozen=True)
class ReferenceCosts:
    """Published or assumed GPU figures of the full-size model, for the grid's cost estimate
    (editpersist.bench.costs says where each comes from)."""

    a100_step_s: float  # one denoising step with CFG at native_resolution, batch 1, A100
    native_resolution: int
    load_s: float  # loading a state onto the GPU
    checkpoint_bytes: float  # the checkpoint in half precision


@dataclass(frozen=True)
class ModelFamily:
    name: str
    pipeline_class: str  # attribute of the diffusers package
    denoiser: str  # "unet" or "transformer"
    text_encoders: tuple[str, ...]  # pipeline component names, in the pipeline's order
    tokenizers: tuple[str, ...]
    # What the closed-form editors (UCE, TIME) solve for: (input group, component, regex on
    # the component's module names). Layers of one group read the same text representation,
    # so one solve serves them all.
    uce_targets: tuple[tuple[str, str, str], ...]
    # peft target_modules for LoRA/DoRA on the denoiser (design.md section 6).
    lora_targets: tuple[str, ...]
    # Text encoders that take an adapter when a fine-tune trains the text encoder: the CLIP
    # encoders, as in diffusers' DreamBooth-LoRA examples (FLUX's T5 stays frozen there too).
    lora_text_encoders: tuple[str, ...] = ("text_encoder",)
    # Half precision used on GPU: SD 1.x/2.x are commonly run in fp16, SDXL and FLUX in bf16.
    gpu_precision: str = "bf16"
    # Each input group of uce_targets: (group, the encode_prompts key it reads, the tokenizer
    # whose positions its token sequence follows, or None for one pooled vector per prompt;
    # TIME pairs token positions, UCE masks padding by it).
    edit_inputs: tuple[tuple[str, str, str | None], ...] = (("tokens", "prompt_embeds", "tokenizer"),)
    # What kind of tokenizer each of `tokenizers` is ("clip" or "t5"): the rehearsal and the
    # tests build matching ones for random pipelines.
    tokenizer_kinds: tuple[str, ...] = ("clip",)
    costs: ReferenceCosts | None = None

    @property
    def components(self) -> tuple[str, ...]:
        return ("vae", self.denoiser, "scheduler") + self.text_encoders + self.tokenizers

    def dtype(self, device: str, precision: str = "auto") -> torch.dtype:
        if precision == "auto" and device != "cpu":
            precision = self.gpu_precision
        return pick_dtype(device, precision)

    def pipeline_cls(self):
        import diffusers

        return getattr(diffusers, self.pipeline_class)

    def load(self, path: str | Path, *, device: str = "cpu", precision: str = "auto",
             allow_download: bool = False):
        """Load a pipeline from a local directory (or a hub id when downloads are allowed)."""
        local = Path(path)
        if local.exists() or not allow_download:
            check_model_dir(local, self)
            source = str(local)
        else:
            source = str(path)
        try:
            pipe = self.pipeline_cls().from_pretrained(
                source,
                dtype=self.dtype(device, precision),
                use_safetensors=True,
                local_files_only=not allow_download,
            )
        except (OSError, ValueError) as e:
            # diffusers names the damaged file in its message (truncated or corrupt weights).
            raise InputError(f"{source}: cannot load the {self.name} model ({str(e).splitlines()[0]})") from e
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)

    def denoiser_of(self, pipe) -> torch.nn.Module:
        return getattr(pipe, self.denoiser)

    # ------------------------------------------------------------ text and calls ----

    def encode_prompts(self, pipe, prompts: list[str]) -> dict[str, torch.Tensor]:
        """The text conditioning the denoiser reads, by the pipeline's own `encode_prompt`:
        {"prompt_embeds": (B, L, D)}, plus {"pooled": (B, D)} where the family has one.
        Editors (what edited layers read) and fine-tuners (training captions) both use it."""
        return {"prompt_embeds": pipe.encode_prompt(prompts, pipe.device, 1, False)[0]}

    def call_kwargs(self, pipe, guidance: float) -> dict:
        """Keyword arguments of the pipeline call that depend on the family."""
        return {"guidance_scale": guidance}

    def added_conditioning(self, pooled: torch.Tensor | None, size: int) -> dict:
        """Extra denoiser inputs besides the token states (SDXL's pooled text and size ids)."""
        return {}

    def training_loss(self, pipe, latents: torch.Tensor, cond_of, generator: torch.Generator):
        """loss(index batch) of the family's training objective on `latents`; `cond_of(idx)`
        gives the batch's encode_prompts output. Noise or v-prediction, as the scheduler says."""
        from diffusers import DDPMScheduler

        from ..training.objectives import DenoisingObjective

        obj = DenoisingObjective(DDPMScheduler.from_config(pipe.scheduler.config))
        denoiser, size = self.denoiser_of(pipe), latents.shape[-1] * pipe.vae_scale_factor

        def loss(idx):
            cond = cond_of(idx)
            return obj.loss(denoiser, latents[idx], cond["prompt_embeds"], generator,
                            **self.added_conditioning(cond.get("pooled"), size))

        return loss

    # ------------------------------------------------------------------- editing ----

    def refact_sites(self, layer: int, pooled_clip_layer: int | None = None) -> list[TextSite]:
        """The text-encoder layers ReFACT edits at `layer` (`pooled_clip_layer`: see FLUX)."""
        clip = f"encoder.layers.{layer}"
        return [TextSite("text_encoder", "tokenizer", clip, f"{clip}.mlp.fc2", "eos")]

    def pooled_clip_layer(self, layers: dict) -> int | None:
        """The extra CLIP layer a ReFACT `layers` block asks this family to edit (FLUX only)."""
        return None

    # ------------------------------------------------------------ random models ----

    def published_scheduler(self):
        """The scheduler configuration of the family's published checkpoint."""
        raise NotImplementedError

    def tiny_pipeline(self, tokenizers: dict, scheduler):
        """A random pipeline of the family's architecture, small enough to build, fine-tune
        and sample in seconds on a CPU (`tokenizers`: by component name)."""
        raise NotImplementedError

    def uce_modules(self, pipe) -> dict[str, torch.nn.Linear]:
        """The linear layers that UCE/TIME edit, keyed '<component>.<module name>'."""
        return {k: m for group in self.uce_groups(pipe).values() for k, m in group.items()}

    def group_tokenizer(self, pipe, group: str):
        """The tokenizer of a token-sequence input group, or None for a pooled one."""
        name = {g: tok for g, _, tok in self.edit_inputs}[group]
        return getattr(pipe, name) if name else None

    def uce_groups(self, pipe) -> dict[str, dict[str, torch.nn.Linear]]:
        """Edited layers by the text input they read ('tokens', 't5_tokens', 'clip_pooled')."""
        groups: dict[str, dict[str, torch.nn.Linear]] = {}
        for group, component, pattern in self.uce_targets:
            rx = re.compile(pattern)
            for name, mod in getattr(pipe, component).named_modules():
                if rx.fullmatch(name) and isinstance(mod, torch.nn.Linear):
                    groups.setdefault(group, {})[f"{component}.{name}"] = mod
        if not groups:
            raise InputError(f"{self.name}: no module matches the UCE targets {self.uce_targets}")
        return groups


def check_model_dir(path: Path, family: ModelFamily) -> None:
    """Fail with one line naming the path and what is missing, before diffusers does obscurely."""
    if not path.is_dir():
        raise InputError(f"{path}: model directory not found (family {family.name})")
    index = path / "model_index.json"
    if not index.is_file():
        raise InputError(f"{path}: missing model_index.json; not a diffusers pipeline directory")
    declared = read_json(index)
    if declared.get("_class_name") != family.pipeline_class:
        raise InputError(
            f"{index}: pipeline class {declared.get('_class_name')!r} is not "
            f"{family.pipeline_class!r} (family {family.name})"
        )
    for comp in family.components:
        sub = path / comp
        if not sub.is_dir():
            raise InputError(f"{sub}: missing component directory {comp!r}")
        if comp in (family.denoiser, "vae") + family.text_encoders:
            if not list(sub.glob("*.safetensors")):
                raise InputError(f"{sub}: no .safetensors weights for component {comp!r}")


def tunable_components(family) -> tuple[str, ...]:
    """The pipeline components a fine-tune layer can change: the denoiser, and the text
    encoders that take an adapter (`train_text_encoder`)."""
    return (family.denoiser,) + family.lora_text_encoders


def save_weights(pipe, family) -> dict[str, dict[str, torch.Tensor]]:
    """A copy of every component a fine-tune layer can change, for `restore_weights`."""
    return {c: {k: v.detach().clone() for k, v in getattr(pipe, c).state_dict().items()}
            for c in tunable_components(family)}


def restore_weights(pipe, saved: dict[str, dict[str, torch.Tensor]]) -> None:
    """Undo fine-tune layers applied since `save_weights` (fused adapters leave plain modules)."""
    for component, state in saved.items():
        getattr(pipe, component).load_state_dict(state)
