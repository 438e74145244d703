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

`State` is the one place these names are built (`name`) and read (`parse`); the regular
expressions below are the same grammar for Snakemake's wildcard constraints. A state
without its seed is a group: the states of every seed of one fine-tune at once (one job
trains, or generates the images of, all seeds: the model and the libraries load once).

The state is rebuilt by loading the base once and applying its layers in order: an edit
delta (`.safetensors` of new tensor values), or a fine-tune directory (a diffusers LoRA
file, fused so later layers see plain weights, or a `delta.safetensors`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
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
_TUNE_GROUP = rf"{NAME}/{NAME}"  # <finetuner>/<subject>
_TUNE = rf"{_TUNE_GROUP}/{SEED}"
# Every state name, and every group name.
STATE = rf"{START}|(?:{START})/ft/{_TUNE}|{EDITED}/ft/{_TUNE}/reedit|{EDITED}/transfer/{_TUNE}"
GROUP = rf"{START}|(?:{START})/ft/{_TUNE_GROUP}(?:/reedit)?|{EDITED}/transfer/{_TUNE_GROUP}"

LORA_FILE = "pytorch_lora_weights.safetensors"
DELTA_FILE = "delta.safetensors"


@dataclass(frozen=True)
class State:
    """A model state (or, with `seed` None, the group of a fine-tune's seeds). `State()` is the
    base; an edit sets editor, task and edit; a fine-tune sets finetuner and subject (and the
    seed); `reedit` applies the edit again after the fine-tune; `transfer` puts the adapter the
    base was fine-tuned with on the edited model."""

    editor: str | None = None
    task: str | None = None
    edit: str | None = None
    finetuner: str | None = None
    subject: str | None = None
    seed: int | None = None
    reedit: bool = False
    transfer: bool = False

    def __post_init__(self):
        edited = (self.editor, self.task, self.edit)
        tuned = (self.finetuner, self.subject)
        if None in edited and edited != (None,) * 3 or None in tuned and tuned != (None,) * 2:
            raise InputError(f"{self}: an edit needs editor, task and edit; a fine-tune finetuner and subject")
        if self.seed is not None and self.finetuner is None:
            raise InputError(f"{self}: a seed belongs to a fine-tune")
        if (self.reedit or self.transfer) and (self.editor is None or self.finetuner is None):
            raise InputError(f"{self}: re-edit and transfer are of an edit and a fine-tune")
        if self.reedit and self.transfer:
            raise InputError(f"{self}: a state is re-edited or transferred, not both")

    @classmethod
    def edited(cls, editor: str, task: str, edit: str) -> State:
        return cls(editor, task, edit)

    def finetuned(self, finetuner: str, subject: str, seed: int | None = None) -> State:
        """This (base or edited) state fine-tuned; without `seed`, the group of every seed."""
        return replace(self.start, finetuner=finetuner, subject=subject, seed=seed)

    def transferred(self, finetuner: str, subject: str, seed: int | None = None) -> State:
        return replace(self.finetuned(finetuner, subject, seed), transfer=True)

    def reedited(self) -> State:
        return replace(self, reedit=True)

    @property
    def start(self) -> State:
        """The base or edited state a fine-tune starts from."""
        return State(self.editor, self.task, self.edit)

    @property
    def is_group(self) -> bool:
        return self.finetuner is not None and self.seed is None

    def members(self, seeds) -> list[State]:
        """The states of a group, one per fine-tune seed (base and edited states are their own group)."""
        return [replace(self, seed=int(k)) for k in seeds] if self.is_group else [self]

    @property
    def kind(self) -> str:
        """One of base, edited, base_ft, edited_ft, reedited, transfer."""
        if self.transfer:
            return "transfer"
        if self.reedit:
            return "reedited"
        if self.finetuner is not None:
            return "edited_ft" if self.editor else "base_ft"
        return "edited" if self.editor else "base"

    @property
    def name(self) -> str:
        out = "base" if self.editor is None else f"edit/{self.editor}/{self.task}/{self.edit}"
        if self.finetuner is not None:
            out += f"/{'transfer' if self.transfer else 'ft'}/{self.finetuner}/{self.subject}"
            out += "" if self.seed is None else f"/seed{self.seed}"
            out += "/reedit" if self.reedit else ""
        return out

    def path(self, states_dir: Path) -> Path:
        """Where the workflow keeps this state's last layer (the edit delta of an edited state)."""
        return Path(states_dir) / (f"{self.name}.safetensors" if self.kind == "edited" else self.name)

    @property
    def parts(self) -> dict[str, str]:
        """The set fields as table columns (the seed as written in the name)."""
        out = {}
        if self.editor:
            out.update(editor=self.editor, task=self.task, edit=self.edit)
        if self.finetuner:
            out.update(finetuner=self.finetuner, subject=self.subject)
            if self.seed is not None:
                out["seed"] = str(self.seed)
        return out

    @classmethod
    def parse(cls, name: str, group: bool = False) -> State:
        """The state a name gives (`group`: a group name, without the seed)."""
        if not re.fullmatch(GROUP if group else STATE, name):
            what = "model state group" if group else "model state name"
            raise InputError(f"{name!r}: not a {what} (see editpersist.states)")
        parts = name.split("/")
        start = cls() if parts[0] == "base" else cls.edited(*parts[1:4])
        rest = parts[1:] if parts[0] == "base" else parts[4:]
        if not rest:
            return start
        how, finetuner, subject, *rest = rest
        seed = int(rest.pop(0).removeprefix("seed")) if rest and rest[0].startswith("seed") else None
        if how == "transfer":
            return start.transferred(finetuner, subject, seed)
        state = start.finetuned(finetuner, subject, seed)
        return state.reedited() if rest == ["reedit"] else state

    @classmethod
    def parse_group(cls, name: str) -> State:
        return cls.parse(name, group=True)

    def layers(self) -> list[str]:
        """Paths (relative to results/states/<model>/) of the layers that build the state, in order."""
        if self.is_group:
            raise InputError(f"{self.name!r}: a group of seeds is no one state; take its members")
        if self.kind == "base":
            return []
        if self.kind == "edited":
            return [f"{self.name}.safetensors"]
        tuned = f"{self.finetuner}/{self.subject}/seed{self.seed}"
        if self.kind == "transfer":
            return [f"{self.start.name}.safetensors", f"base/ft/{tuned}"]
        layers = self.start.layers() + [f"{self.start.name}/ft/{tuned}"]
        if self.reedit:  # beside, not inside, the fine-tune directory it builds on
            layers.append(f"reedit/{self.editor}/{self.task}/{self.edit}/{tuned}.safetensors")
        return layers

    def layer_paths(self, states_dir: Path) -> list[Path]:
        """`layers` under a model's states folder (results/states/<model>)."""
        return [Path(states_dir) / layer for layer in self.layers()]


BASE = State()


def layer_target(layer: str) -> str:
    """The workflow output that holds a layer: a fine-tune of one seed lives in the directory of
    its fine-tune's seeds, and so does the re-edit of one seed; an edit delta is its own file."""
    if re.search(r"(^|/)reedit/", layer):
        return re.sub(rf"/{SEED}\.safetensors$", "", layer)
    return re.sub(rf"/{SEED}$", "", layer) if "/ft/" in layer and not layer.endswith(".safetensors") else layer


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
