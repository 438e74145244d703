"""A model state out of the project: a diffusers pipeline folder that plain diffusers loads
(`DiffusionPipeline.from_pretrained`), with every layer of the state (edit deltas, fused
adapters, fine-tuned weights) in its weights. A state whose last layer is an adapter (LoRA or
DoRA, for base_ft, edited_ft and transfer) also gets that adapter as a diffusers LoRA file
(`lora/pytorch_lora_weights.safetensors`, for `load_lora_weights`), with the state it applies
to named in `editpersist_export.json`."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..errors import InputError
from ..io import atomic_dir, write_json
from ..states import LORA_FILE, State, load_model_state

log = logging.getLogger("editpersist")

EXPORT_FILE = "editpersist_export.json"


def state_layer_paths(states_dir: Path, state: State) -> list[Path]:
    """The files and folders of the state's layers; one line naming the first that is missing."""
    paths = state.layer_paths(states_dir)
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise InputError(f"{missing[0]}: layer of state {state.name!r} not found (run the workflow to make it)")
    return paths


def last_adapter(state: State, layers: list[Path]) -> Path | None:
    """The adapter file of the state's last layer, when it is a LoRA/DoRA fine-tune; a re-edit
    after one is a delta on top, which a LoRA file cannot carry."""
    if state.kind not in ("base_ft", "edited_ft", "transfer"):
        return None
    adapter = layers[-1] / LORA_FILE
    return adapter if adapter.is_file() else None


def export_state(model_dir: Path, family_name: str, states_dir: Path, state_name: str, out: Path,
                 device: str = "cpu", precision: str = "auto") -> dict:
    """Write the state as a pipeline folder at `out` (atomically); returns its export record."""
    state = State.parse(state_name)
    layers = state_layer_paths(states_dir, state)
    _, pipe = load_model_state(model_dir, family_name, layers, device, precision)
    adapter = last_adapter(state, layers)
    record = {"state": state.name, "kind": state.kind, "model": str(model_dir), "family": family_name,
              "layers": [str(p) for p in layers], "pipeline": type(pipe).__name__}
    with atomic_dir(out) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        if adapter is not None:
            (tmp / "lora").mkdir()
            shutil.copyfile(adapter, tmp / "lora" / LORA_FILE)
            # This state is the adapter on its start: the base (base_ft) or the edited model
            # (edited_ft; transfer, whose adapter was trained on the base).
            record["lora"] = {"file": f"lora/{LORA_FILE}", "applies_to": state.start.name}
        write_json(tmp / EXPORT_FILE, record)
    log.info("exported %s (%d layers) to %s", state.name, len(layers), out)
    return record
