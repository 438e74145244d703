"""Weight-space diagnostic: does fine-tuning move the edited weights back?

For every module an edit changed (W0 -> We) and a fine-tune of the edited model (We -> Weft):
* cosine between the fine-tuning update (Weft - We) and the edit update (We - W0);
* share_removed = -<Weft - We, We - W0> / |We - W0|^2: the fraction of the edit's update that
  fine-tuning undid, as a projection (1: moved exactly back to W0 along the edit direction).
A module fine-tuning does not touch (ReFACT's text-encoder layer under a UNet fine-tune) has a
zero update: cosine NaN, share_removed 0 - its edit can still fade behaviourally, downstream.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..editors.base import EditDelta, apply_delta, restore, state_parameter
from ..states import apply_layer, load_model_state, restore_weights, save_weights

log = logging.getLogger("editpersist")


def update_alignment(edit_update: torch.Tensor, ft_update: torch.Tensor) -> dict[str, float]:
    e, f = edit_update.double().flatten(), ft_update.double().flatten()
    e_norm, f_norm = float(e.norm()), float(f.norm())
    dot = float(e @ f)
    return {"edit_norm": e_norm, "ft_norm": f_norm,
            "cosine": dot / (e_norm * f_norm) if e_norm > 0 and f_norm > 0 else float("nan"),
            "share_removed": -dot / e_norm**2 if e_norm > 0 else float("nan")}


def _current(pipe, keys) -> dict[str, torch.Tensor]:
    return {k: state_parameter(pipe, k).detach().float().cpu().clone() for k in keys}


def edit_ft_alignment(pipe, family, edit_path: Path, ft_dir: Path) -> list[dict]:
    """Per-module rows and one '(all)' row for one (edit, fine-tune) pair; leaves `pipe` as found."""
    delta = EditDelta.load(edit_path)
    before_ft = save_weights(pipe, family)
    base = _current(pipe, delta.tensors)
    originals = apply_delta(pipe, delta)
    edited = _current(pipe, delta.tensors)
    apply_layer(pipe, family, ft_dir)
    tuned = _current(pipe, delta.tensors)
    restore_weights(pipe, before_ft)
    restore(pipe, originals)
    rows = [{"module": k, **update_alignment(edited[k] - base[k], tuned[k] - edited[k])} for k in delta.tensors]
    cat = lambda d1, d2: torch.cat([(d1[k] - d2[k]).flatten() for k in delta.tensors])  # noqa: E731
    rows.append({"module": "(all)", **update_alignment(cat(edited, base), cat(tuned, edited))})
    return rows


def weight_diagnostics(model_dir: Path, family_name: str, pairs: list[dict], states_dir: Path,
                       device: str) -> pd.DataFrame:
    """`pairs`: {editor, task, edit, finetuner, subject}; the base is loaded once for all of them."""
    from tqdm.auto import tqdm

    family, pipe = load_model_state(model_dir, family_name, [], device)
    rows = []
    with torch.no_grad():
        for p in tqdm(pairs, desc="weights", mininterval=5.0):
            edited = f"edit/{p['editor']}/{p['task']}/{p['edit']}"
            for r in edit_ft_alignment(pipe, family, states_dir / f"{edited}.safetensors",
                                       states_dir / edited / "ft" / p["finetuner"] / p["subject"]):
                rows.append({**p, **r})
    frame = pd.DataFrame(rows)
    log.info("weight diagnostic: %d pairs, median share removed %.3f", len(pairs),
             float(np.nanmedian(frame.loc[frame["module"] == "(all)", "share_removed"])) if len(frame) else np.nan)
    return frame
