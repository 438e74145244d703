"""The editor interface: a pipeline plus edit requests in, an edit delta out.

An edit delta holds the *new values* of only the tensors an editor changed
(keyed '<component>.<parameter name>'), plus a JSON sidecar. Storing values
rather than differences makes applying a delta bit-exact; the originals are
kept in memory by `apply_delta` so that removing it is bit-exact too.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from ..errors import InputError
from ..io import atomic_path, load_tensors, read_json, save_tensors
from ..sampling import SamplingConfig
from ..tasks.requests import EditRequest


def working_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """What editors compute in: float32 (also for half-precision models), float64 for float64
    inputs (the parity tests compare with the official procedures in float64)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


@dataclass
class EditDelta:
    tensors: dict[str, torch.Tensor]
    sidecar: dict = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """`path` is the .safetensors file; the sidecar is written beside it as .json."""
        save_tensors(path, self.tensors, metadata={"editor": str(self.sidecar.get("editor", ""))})
        with atomic_path(sidecar_path(path)) as tmp:
            tmp.write_text(json.dumps(self.sidecar, indent=2, sort_keys=True, default=str) + "\n")

    @classmethod
    def load(cls, path: Path) -> "EditDelta":
        side = sidecar_path(path)
        if not side.is_file():
            raise InputError(f"{side}: missing sidecar of edit delta {path}")
        return cls(load_tensors(path), read_json(side))


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def state_parameter(pipe, key: str) -> torch.nn.Parameter:
    component, name = key.split(".", 1)
    module = getattr(pipe, component, None)
    if module is None:
        raise InputError(f"delta tensor {key!r}: the pipeline has no component {component!r}")
    try:
        return module.get_parameter(name)
    except AttributeError:
        raise InputError(f"delta tensor {key!r}: no parameter {name!r} in {component}") from None


@torch.no_grad()
def apply_delta(pipe, delta: EditDelta) -> dict[str, torch.Tensor]:
    """Write the delta's tensors into the pipeline; return the originals (for `restore`)."""
    originals = {}
    for key, value in delta.tensors.items():
        p = state_parameter(pipe, key)
        if p.shape != value.shape:
            raise InputError(f"delta tensor {key!r}: shape {tuple(value.shape)} does not fit {tuple(p.shape)}")
        originals[key] = p.detach().clone()
        p.copy_(value.to(p.dtype))
    return originals


@torch.no_grad()
def restore(pipe, originals: dict[str, torch.Tensor]) -> None:
    for key, value in originals.items():
        state_parameter(pipe, key).copy_(value)


class Editor(Protocol):
    name: str

    def edit(self, pipe, family, requests: list[EditRequest]) -> EditDelta: ...


def frozen_value(value):
    """A YAML value as a frozen config holds it: lists become tuples, also inside mappings."""
    if isinstance(value, dict):
        return {k: frozen_value(v) for k, v in value.items()}
    return tuple(frozen_value(v) for v in value) if isinstance(value, list) else value


class BlockConfig:
    """The base of every editor's config dataclass: `from_block` reads a config block with known
    keys only, lists frozen to tuples, and the dataclass's `__post_init__` checks the values. The
    config check runs it (through each editor's `parse`), so a bad block stops before any job."""

    @classmethod
    def from_block(cls, block: dict):
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(block) - set(known))
        if unknown:
            raise ValueError(f"{unknown[0]}: not a setting of {cls.__name__} (known: {', '.join(known)})")
        return cls(**{k: frozen_value(v) for k, v in block.items()})


# meter(pipe, request): what the model as it is now draws for request.source, read one way.
Meter = Callable[[Any, EditRequest], Any]


@dataclass(frozen=True)
class MeterSpec:
    """A meter an editor asks the edit stage for: `n_images` images of a request's source prompt
    from the model as it is now, with seeds of stream `stream` (sampling.SEED_STREAMS), read
    `by` the toy world's reader or the CLIP judge as `reading`:

    * "attribute_shares": the share of images showing each of request.attributes (debias);
    * "target_share": the share showing request.target (an edit's efficacy).

    The stage builds it only for a case with requests of one of `modes`; `key` is where the
    editor's block sets `by` (for messages)."""

    reading: str
    by: str
    n_images: int
    stream: str
    modes: tuple[str, ...]
    key: str

    def __post_init__(self):
        if self.reading not in ("attribute_shares", "target_share"):
            raise ValueError(f"meter reading {self.reading!r}: 'attribute_shares' or 'target_share'")
        if self.by not in ("judge", "reader"):
            raise ValueError(f"meter {self.by!r}: 'judge' or 'reader'")

    @property
    def needs_reader_model(self) -> bool:
        """Attribute shares are colours, read from the pixels; a target (a colour and a shape) is
        read by the toy world's trained reader."""
        return self.by == "reader" and self.reading == "target_share"


@dataclass(frozen=True)
class EditContext:
    """What building an editor may use besides its config block; the same for every editor."""

    family: Any  # the ModelFamily of the edited model
    task: str
    seed: int = 0
    sampling: SamplingConfig | None = None  # how the model's images are drawn
    stats_dir: Path | None = None  # the layer_stats rule's output, for editors with `statistics`
    meters: dict[str, Meter] = field(default_factory=dict)  # reading -> meter, as the editor's specs asked

    def meter(self, reading: str, editor: str) -> Meter:
        if reading not in self.meters:
            raise ValueError(f"{editor} needs a {reading} meter, and none was built for task {self.task}")
        return self.meters[reading]


def no_meters(block: dict) -> tuple[MeterSpec, ...]:
    return ()


@dataclass(frozen=True)
class EditWork:
    """What one edit computes, in the terms the GPU sizing and the cost model price (they know
    no editor): the text encodings of the case's prompts, then one closed-form solve, or
    `text_steps` optimisation steps of `text_prompts` prompts on text-encoder layer `text_layer`
    (FLUX's pooled CLIP encoder too when `pooled_clip`); `meter_images` images generated and
    judged while editing (an upper bound); `simulated_steps` steps of a simulated full fine-tune
    of batch `simulated_batch`."""

    text_steps: int = 0
    text_layer: int | None = None
    text_prompts: int = 1
    pooled_clip: bool = False
    meter_images: int = 0
    simulated_steps: int = 0
    simulated_batch: int = 1


def closed_form_work(block: dict, family_name: str, task: str) -> EditWork:
    return EditWork()


@dataclass(frozen=True)
class StatsWork:
    """What a model's layer statistics cover: `texts` corpus texts through the text encoder at
    each of `layers` (and FLUX's pooled CLIP layer when `pooled_clip`), in batches of `batch`."""

    texts: int
    layers: tuple[int, ...]
    pooled_clip: bool
    batch: int


@dataclass(frozen=True)
class LayerStatistics:
    """Statistics an editor reads, made once per model before its edits (the layer_stats rule):
    `compute(pipe, family, block, seed, out_dir)` writes them; `work(block, family_name)` says
    what that covers, without a model; `files(block)` gives the files the block names, as
    {key: path} (checked at config check; inputs of the rule)."""

    compute: Callable[[Any, Any, dict, int, Path], None]
    work: Callable[[dict, str], StatsWork]
    files: Callable[[dict], dict[str, str]]


@dataclass(frozen=True)
class EditorMethod:
    """One editor as the study knows it: its config key, the edit modes it supports, what it needs
    from the stage and how its config block becomes an editor (in the editor's own module).
    `editors.EDITORS` lists them; the config check, the edit stage, the workflow's wildcards
    and inputs, and the grid read that registry and nothing of an editor's internals."""

    name: str
    modes: tuple[str, ...]
    build: Callable[[dict, EditContext], Editor]
    # The editor's settings from its config block alone (no model): raises ValueError or
    # TypeError on a block its config dataclass refuses. The workflow runs it for every editor
    # right after the config check (editors.check_editor_blocks), so such a block stops before
    # any job; `build` reads the same settings.
    parse: Callable[[dict], object]
    # Assumed GPU seconds of one edit at real scale besides what `work` prices (the images it
    # generates, the fine-tunes it simulates), for the grid's cost model (bench/costs.py).
    reference_gpu_s: float
    # What one edit of a task computes, from the block (EditWork): the sizing prices it.
    work: Callable[[dict, str, str], EditWork] = closed_form_work
    statistics: LayerStatistics | None = None  # made once per model by the layer_stats rule
    # The meters its block asks for (the stage builds them into EditContext.meters).
    meters: Callable[[dict], tuple[MeterSpec, ...]] = no_meters
    # A variant of another editor: its config block is that editor's with these keys added
    # (`editor_block`), so the study compares the two under the same settings.
    builds_on: str | None = None


def make_sidecar(editor: str, hparams: dict, modules: list[str], requests: list[EditRequest], started: float) -> dict:
    import diffusers
    import transformers

    return {
        "editor": editor,
        "hyperparameters": hparams,
        "edited_modules": modules,
        "requests": [asdict(r) for r in requests],
        "wall_s": round(time.perf_counter() - started, 4),
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__},
    }
