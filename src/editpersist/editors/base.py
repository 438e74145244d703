"""The editor interface: a pipeline plus edit requests in, an edit delta out.

An edit delta holds the *new values* of only the tensors an editor changed
(keyed '<component>.<parameter name>'), plus a JSON sidecar. Storing values
rather than differences makes applying a delta bit-exact; the originals are
kept in memory by `apply_delta` so that removing it is bit-exact too.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
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


@dataclass(frozen=True)
class EditContext:
    """What building an editor may use besides its config block."""

    family: Any  # the ModelFamily of the edited model
    task: str
    seed: int = 0
    ratio_meter: Callable | None = None  # debias: attribute shares of the current model's images
    stats_dir: Path | None = None  # ReFACT: the refact_stats rule's layer statistics
    edit_meter: Callable | None = None  # uce-persist: share of the source's images that show the target
    sampling: SamplingConfig | None = None  # uce-persist: how its simulated subject's images are drawn


@dataclass(frozen=True)
class EditorMethod:
    """One editor as the study knows it: its config key, the edit modes it supports and how its
    config block becomes an editor (in the editor's own module). `editors.EDITORS` lists them;
    the config schema, the workflow's wildcards and the grid read that registry."""

    name: str
    modes: tuple[str, ...]
    build: Callable[[dict, EditContext], Editor]
    # The editor's settings from its config block alone (no model): raises ValueError or
    # TypeError on a block its config dataclass refuses. The workflow runs it for every editor
    # right after the config check (editors.check_editor_blocks), so such a block stops before
    # any job; `build` reads the same settings.
    parse: Callable[[dict], object]
    # Assumed GPU seconds of one edit at real scale, for the grid's cost model (bench/costs.py).
    reference_gpu_s: float
    layer_statistics: bool = False  # reads the refact_stats rule's output
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
