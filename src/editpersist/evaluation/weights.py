"""Weight-space diagnostic: does fine-tuning move the edited weights back?

For every module an edit changed (W0 -> We) and a fine-tune of the edited model (We -> Weft):
* cosine between the fine-tuning update (Weft - We) and the edit update (We - W0);
* share_removed = -<Weft - We, We - W0> / |We - W0|^2: the fraction of the edit's update that
  fine-tuning undid, as a projection (1: moved exactly back to W0 along the edit direction);
* the same two for the control, the fine-tune of the unedited model (Wbft - W0) against the
  edit's direction: a fine-tune that moves these weights against the edit direction whether or
  not the model was edited is not undoing the edit in particular.
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
from ..families.base import restore_weights, save_weights
from ..states import BASE, State, apply_layer, load_model_state

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


def _tuned(pipe, family, ft_dir: Path, keys) -> dict[str, torch.Tensor]:
    """The weights `keys` after applying a fine-tune layer; leaves `pipe` as found."""
    before = save_weights(pipe, family)
    apply_layer(pipe, family, ft_dir)
    tuned = _current(pipe, keys)
    restore_weights(pipe, before)
    return tuned


def edit_ft_alignment(pipe, family, delta: EditDelta, ft_dir: Path, control: dict[str, torch.Tensor]) -> list[dict]:
    """Per-module rows and one '(all)' row for one (edit, fine-tune) pair and its control
    (`control`: the edited modules' weights after the unedited model's fine-tune of the same
    seed); leaves `pipe` as found."""
    keys = list(delta.tensors)
    base = _current(pipe, keys)
    originals = apply_delta(pipe, delta)
    edited = _current(pipe, keys)
    tuned = _tuned(pipe, family, ft_dir, keys)
    restore(pipe, originals)

    def row(module: str, diff) -> dict:
        ctrl = update_alignment(diff(edited, base), diff(control, base))
        return {"module": module, **update_alignment(diff(edited, base), diff(tuned, edited)),
                "control_cosine": ctrl["cosine"], "control_share_removed": ctrl["share_removed"]}

    rows = [row(k, lambda a, b, k=k: a[k] - b[k]) for k in keys]
    rows.append(row("(all)", lambda a, b: torch.cat([(a[k] - b[k]).flatten() for k in keys])))
    return rows


def weight_diagnostics(model_dir: Path, family_name: str, pairs: list[dict], states_dir: Path,
                       device: str) -> pd.DataFrame:
    """`pairs`: {editor, task, edit, finetuner, subject, seeds}, one row set per seed; the base is
    loaded once for all of them. Pairs are visited control by control, so each control (a base
    fine-tune, shared by every edit) is applied once for the modules its edits touch."""
    from tqdm.auto import tqdm

    family, pipe = load_model_state(model_dir, family_name, [], device)
    jobs = sorted(((p, seed) for p in pairs for seed in p["seeds"]), key=lambda j: (j[0]["finetuner"],
                                                                                   j[0]["subject"], j[1]))
    rows, control_dir, control = [], None, {}
    with torch.no_grad():
        for p, seed in tqdm(jobs, desc="weights", mininterval=5.0):
            edited = State.edited(p["editor"], p["task"], p["edit"])
            delta = EditDelta.load(edited.path(states_dir))
            this_control = BASE.finetuned(p["finetuner"], p["subject"], seed).path(states_dir)
            keys = set(delta.tensors)
            if this_control != control_dir:
                control_dir, control = this_control, {}
            if not keys <= control.keys():
                control.update(_tuned(pipe, family, control_dir, keys - control.keys()))
            ft = edited.finetuned(p["finetuner"], p["subject"], seed).path(states_dir)
            for r in edit_ft_alignment(pipe, family, delta, ft, control):
                rows.append({**{k: v for k, v in p.items() if k != "seeds"}, "seed": seed, **r})
    frame = pd.DataFrame(rows)
    log.info("weight diagnostic: %d pairs, median share removed %.3f", len(pairs),
             float(np.nanmedian(frame.loc[frame["module"] == "(all)", "share_removed"])) if len(frame) else np.nan)
    return frame
