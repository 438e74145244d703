"""Model states as chains of deltas on a base model (design.md section 2).

A state is named by its path under `results/states/<model>/`:

    base                                        the base model
    edit/<editor>/<task>/<edit>                 edited
    base/ft/<finetuner>/<subject>/seed<k>       base_ft (the shared control), fine-tune seed k
    edit/<editor>/<task>/<edit>/ft/<ft>/<subj>/seed<k>
                                                edited_ft (paired with base_ft of the same seed)
    <an edited_ft state>/reedit                 the same edit applied again after fine-tuning
    edit/<editor>/<task>/<edit>/transfer/<ft>/<subj>/seed<k>
                                                edited + the adapter trained on the base

The state is rebuilt by loading the base once and applying its layers in order: an edit
delta (`.safetensors` of new tensor values), or a fine-tune directory (a diffusers LoRA
file, fused so later layers see plain weights, or a `delta.safetensors`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .editors.base import EditDelta, apply_delta, restore
from .families.base import restore_weights
from .errors import InputError
from .io import load_tensors

# A model, editor, task, edit, fine-tuner or subject name as it appears in a path.
NAME = r"[A-Za-z0-9][A-Za-z0-9-]*"
SEED = r"seed[0-9]+"
EDITED = rf"edit/{NAME}/{NAME}/{NAME}"
START = rf"base|{EDITED}"
_TUNE = rf"{NAME}/{NAME}/{SEED}"  # <finetuner>/<subject>/seed<k>
FINETUNED = rf"(?:{START})/ft/{_TUNE}"
# Every state name.
STATE = rf"{START}|{FINETUNED}|{EDITED}/ft/{_TUNE}/reedit|{EDITED}/transfer/{_TUNE}"
# A state group: a state name without its fine-tune seed, naming the states of every seed at
# once (one job trains, or generates the images of, all seeds of a fine-tune: the model and
# the libraries load once per job, not once per seed). For Snakemake's wildcard_constraints.
_TUNE_GROUP = rf"{NAME}/{NAME}"
_GROUP_PARTS = rf"({START})/ft/({_TUNE_GROUP})(/reedit)?|({EDITED})/transfer/({_TUNE_GROUP})"
GROUP = rf"{START}|(?:{START})/ft/{_TUNE_GROUP}(?:/reedit)?|{EDITED}/transfer/{_TUNE_GROUP}"

LORA_FILE = "pytorch_lora_weights.safetensors"
DELTA_FILE = "delta.safetensors"


@dataclass(frozen=True)
class StateName:
    """A parsed state name; `kind` is one of base, edited, base_ft, edited_ft, reedited, transfer."""

    name: str
    kind: str
    edit: str | None  # "edit/<editor>/<task>/<edit>", or None for unedited states
    finetune: str | None  # "<finetuner>/<subject>/seed<k>"

    @property
    def parts(self) -> dict[str, str]:
        out = {}
        if self.edit:
            _, out["editor"], out["task"], out["edit"] = self.edit.split("/")
        if self.finetune:
            out["finetuner"], out["subject"], seed = self.finetune.split("/")
            out["seed"] = seed.removeprefix("seed")
        return out


def finetuned_state(start: str, finetuner: str, subject: str, seed: int) -> str:
    """base_ft (start "base") or edited_ft (start an edited state) of one fine-tune seed."""
    return f"{start}/ft/{finetuner}/{subject}/seed{seed}"


def parse_state(name: str) -> StateName:
    if not re.fullmatch(STATE, name):
        raise InputError(f"{name!r}: not a model state name (see editpersist.states)")
    m = re.fullmatch(rf"({EDITED})/transfer/({_TUNE})", name)
    if m:
        return StateName(name, "transfer", m.group(1), m.group(2))
    reedit = name.endswith("/reedit")
    core = name.removesuffix("/reedit")
    m = re.fullmatch(rf"({START})/ft/({_TUNE})", core)
    if m:
        edit = None if m.group(1) == "base" else m.group(1)
        kind = "reedited" if reedit else ("edited_ft" if edit else "base_ft")
        return StateName(name, kind, edit, m.group(2))
    if core == "base":
        return StateName(name, "base", None, None)
    return StateName(name, "edited", core, None)


def state_layers(name: str) -> list[str]:
    """Paths (relative to results/states/<model>/) of the layers that build a state, in order."""
    s = parse_state(name)
    if s.kind == "base":
        return []
    if s.kind == "edited":
        return [f"{s.edit}.safetensors"]
    if s.kind == "transfer":
        return [f"{s.edit}.safetensors", f"base/ft/{s.finetune}"]
    start = s.edit or "base"
    layers = state_layers(start) + [f"{start}/ft/{s.finetune}"]
    if s.kind == "reedited":
        layers.append(reedit_path(s))
    return layers


def group_members(group: str, seeds) -> list[str]:
    """The states of a group, one per fine-tune seed (base and edited states are their own group)."""
    m = re.fullmatch(_GROUP_PARTS, group)
    if m is None:
        if not re.fullmatch(START, group):
            raise InputError(f"{group!r}: not a model state group (see editpersist.states)")
        return [group]
    if m.group(1) is not None:
        return [f"{m.group(1)}/ft/{m.group(2)}/seed{k}{m.group(3) or ''}" for k in seeds]
    return [f"{m.group(4)}/transfer/{m.group(5)}/seed{k}" for k in seeds]


def group_tune(group: str) -> tuple[str, str] | None:
    """(fine-tuner, subject) of a group of fine-tuned (or transfer) states; None for base and edited."""
    m = re.fullmatch(_GROUP_PARTS, group)
    return None if m is None else tuple((m.group(2) or m.group(5)).split("/"))


def layer_target(layer: str) -> str:
    """The workflow output that holds a layer: a fine-tune of one seed lives in the directory of
    its fine-tune's seeds, and so does the re-edit of one seed; an edit delta is its own file."""
    if re.search(r"(^|/)reedit/", layer):
        return re.sub(rf"/{SEED}\.safetensors$", "", layer)
    return re.sub(rf"/{SEED}$", "", layer) if "/ft/" in layer and not layer.endswith(".safetensors") else layer


def reedit_path(s: StateName) -> str:
    """Where a re-edit delta lives (beside, not inside, the fine-tune directory it builds on; the
    re-edits of every seed of a fine-tune share a directory)."""
    p = s.parts
    return f"reedit/{p['editor']}/{p['task']}/{p['edit']}/{s.finetune}.safetensors"


def finetune_snapshots(ft_dir: Path) -> list[int]:
    """Steps of the intermediate snapshots a fine-tune directory holds, ascending."""
    return sorted(int(p.stem.split("_")[1]) for p in Path(ft_dir).glob("snapshot_*.safetensors"))


@torch.no_grad()
def apply_layer(pipe, family, layer: Path, snapshot: int | None = None) -> dict | None:
    """Apply one layer of a state in place. `snapshot`: a fine-tune's intermediate step instead
    of its final weights. Returns an edit delta's originals (for editors.base.restore); a
    fine-tune layer is undone with `restore_weights`."""
    layer = Path(layer)
    if layer.suffix == ".safetensors":
        return apply_delta(pipe, EditDelta.load(layer))
    if not layer.is_dir():
        raise InputError(f"{layer}: state layer not found")
    is_adapter = (layer / LORA_FILE).is_file()
    if snapshot is not None:
        weights = layer / f"snapshot_{snapshot}.safetensors"
    else:
        weights = layer / (LORA_FILE if is_adapter else DELTA_FILE)
    if not weights.is_file():
        raise InputError(f"{weights}: missing fine-tune weights")
    if is_adapter:
        load_adapter_fused(pipe, family, weights)
    else:
        apply_delta(pipe, EditDelta(load_tensors(weights)))
    return None


def load_adapter_fused(pipe, family, weights: Path) -> None:
    """Load a diffusers-format LoRA/DoRA file and fuse it into the weights: the state then has
    plain modules (an edit or a further adapter applies to them as to any model)."""
    try:
        pipe.load_lora_weights(load_tensors(weights), adapter_name="state")
    except (ValueError, KeyError, RuntimeError) as e:
        raise InputError(f"{weights}: not a LoRA for this {family.name} model ({e})") from e
    # Fuse into every component the file adapts (FLUX's default would skip its text encoder).
    adapted = [c for c in type(pipe)._lora_loadable_modules
               if "state" in getattr(getattr(pipe, c, None), "peft_config", {})]
    if not adapted:  # diffusers skips keys that match no module instead of failing
        raise InputError(f"{weights}: not a LoRA for this {family.name} model (none of its keys matches a module)")
    pipe.fuse_lora(components=adapted, adapter_names=["state"], lora_scale=1.0)
    pipe.unload_lora_weights()


def apply_undoable(pipe, family, layers: list[Path], loaded: dict):
    """Apply layers on top of the loaded state; returns the function that undoes them (deltas by
    their own originals, fine-tune layers by restoring `loaded`, the tunable weights as loaded)."""
    originals = [apply_layer(pipe, family, layer) for layer in layers]

    def undo():
        for orig in reversed(originals):
            if orig is not None:
                restore(pipe, orig)
        restore_weights(pipe, loaded)

    return undo


def load_model_state(model_dir: Path, family_name: str, layers: list[Path], device: str,
                     precision: str = "auto"):
    """The pipeline of a model state: the base, with each layer applied in order."""
    from .families import get_family

    family = get_family(family_name)
    pipe = family.load(model_dir, device=device, precision=precision)
    for layer in layers:
        apply_layer(pipe, family, layer)
    return family, pipe
