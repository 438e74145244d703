"""From scored images to the persistence table (design.md section 3) and its extensions.

Every number comes with the replicates of one paired bootstrap (metrics.bootstrap): the same
resampling of (prompt, image) cells is applied to all states of a model, so each retention
interval accounts for the sampling noise of all four states at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import InputError
from ..grid import GridCell
from ..metrics.bootstrap import draw_indices, percentile_interval, resample, retention
from ..metrics.fid import FrechetReference
from ..metrics.task_metrics import METRICS, metrics_of_case, reduce_grid
from ..tasks.cases import EditCase
from ..states import parse_state
from .prompts import PRIMARY, case_key

COLUMNS = ["model", "family", "editor", "task", "edit", "finetuner", "ft_data", "relation", "metric", "base",
           "edited", "base_ft", "edited_ft", "retention", "ci_low", "ci_high", "n_images"]


@dataclass
class Estimate:
    """A metric of one state: the point value and its bootstrap replicates."""

    value: float
    replicates: np.ndarray
    n_images: int


@dataclass
class ModelScores:
    """One model's scored images, indexed for the metrics, with a cache of estimates."""

    table: pd.DataFrame
    features: np.ndarray
    reference: FrechetReference
    scorer: str  # "reader" (the toy world's ground truth) or "judge"
    samples: int
    seed: int
    _groups: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict)

    def __post_init__(self):
        self._groups = {k: g for k, g in self.table.groupby(["state", "step", "case", "role"], sort=False)}

    def states(self) -> set[str]:
        return set(self.table["state"].unique())

    def has_role(self, state: str, role: str, step: int = -1) -> bool:
        return any(k[0] == state and k[1] == step and k[3] == role for k in self._groups)

    def steps(self, state: str) -> list[int]:
        return sorted(int(s) for s in self.table.loc[self.table["state"] == state, "step"].unique() if s >= 0)

    def _values(self, rows: pd.DataFrame, metric: str) -> np.ndarray:
        kind = METRICS[metric].kind
        if kind == "fid":
            return rows["feature"].to_numpy()
        if kind == "mean":
            return rows["clip_score"].to_numpy()
        if kind == "debias":
            return rows[f"{self.scorer}_attr"].to_numpy()
        hits = rows[f"{self.scorer}_hit"].to_numpy(dtype=float)
        if np.isnan(hits).any():
            raise InputError(f"scorer {self.scorer!r} has no reading for these images (is there a reader?)")
        return hits if self.scorer == "reader" else (hits > 0.5).astype(float)

    def grid(self, state: str, case: EditCase | None, metric: str, step: int = -1,
             roles: tuple[str, ...] | None = None) -> np.ndarray:
        """The metric's data as a prompts x images grid (rows sorted by prompt, columns by index);
        `roles` narrows the probe roles the metric reads."""
        key = case_key(case) if case is not None else ""
        parts = [self._groups[g] for role in roles or METRICS[metric].roles
                 if (g := (state, step, key, role)) in self._groups]
        if not parts:
            raise InputError(f"no scored images of {state!r} (step {step}) for {metric} of {key or 'quality'}")
        rows = pd.concat(parts).sort_values(["prompt", "index"])
        n = rows.groupby("prompt", sort=True).size()
        width = int(n.min())
        rows = rows.groupby("prompt", sort=True).head(width)  # equal images per prompt (quality uses the first k)
        return self._values(rows, metric).reshape(len(n), width)

    def estimate(self, state: str, case: EditCase | None, metric: str, step: int = -1,
                 roles: tuple[str, ...] | None = None) -> Estimate:
        key = (state, case_key(case) if case is not None else "", metric, step, roles)
        if key not in self._cache:
            grid = self.grid(state, case, metric, step, roles)
            rows, cols = draw_indices(grid.shape, self.samples, self.seed)
            extra = {"desired": np.array(case.debias.ratios) if METRICS[metric].kind == "debias" else None,
                     "features": self.features, "reference": self.reference}
            value = float(reduce_grid(METRICS[metric], grid[None], **extra)[0])
            reps = reduce_grid(METRICS[metric], resample(grid, rows, cols), **extra)
            self._cache[key] = Estimate(value, reps, grid.size)
        return self._cache[key]


def metric_case(metric: str, case: EditCase) -> EditCase | None:
    """Quality metrics are measured on the shared caption set, not the case's prompts."""
    return None if METRICS[metric].roles == ("quality",) else case


@dataclass(frozen=True)
class Cell:
    """One (model, editor, case, fine-tuner, fine-tune data) cell of the grid."""

    model: str
    family: str
    editor: str
    case: EditCase
    finetuner: str
    subject: str
    relation: str

    @property
    def grid(self) -> GridCell:
        return GridCell(self.model, self.editor, self.case.task, self.case.name, self.finetuner, self.subject)

    @property
    def edited(self) -> str:
        return self.grid.start

    @property
    def base_ft(self) -> str:
        return self.grid.base_ft

    @property
    def edited_ft(self) -> str:
        return self.grid.edited_ft


def ratio_row(scores: ModelScores, cell: Cell, metric: str, numerator: str, step: int = -1,
              roles: tuple[str, ...] | None = None) -> dict:
    """Point value and interval of (numerator - base_ft) / (edited - base) for one metric; the
    numerator and base_ft at fine-tuning step `step` (-1: the end)."""
    case = metric_case(metric, cell.case)
    est = {s: scores.estimate(state, case, metric, st, roles) for s, state, st in (
        ("base", "base", -1), ("edited", cell.edited, -1), ("base_ft", cell.base_ft, step), ("num", numerator, step))}
    value = float(retention(est["base"].value, est["edited"].value, est["base_ft"].value, est["num"].value))
    reps = retention(est["base"].replicates, est["edited"].replicates, est["base_ft"].replicates,
                     est["num"].replicates)
    low, high = percentile_interval(reps)
    return {"base": est["base"].value, "edited": est["edited"].value, "base_ft": est["base_ft"].value,
            "value": est["num"].value, "ratio": value, "ci_low": low, "ci_high": high,
            "n_images": est["num"].n_images, "replicates": reps}


def cell_keys(cell: Cell) -> dict:
    return {"model": cell.model, "family": cell.family, "editor": cell.editor, "task": cell.case.task,
            "edit": cell.case.name, "finetuner": cell.finetuner, "ft_data": cell.subject, "relation": cell.relation}


def persistence_rows(scores: ModelScores, cell: Cell) -> list[dict]:
    out = []
    for metric in metrics_of_case(cell.case):
        r = ratio_row(scores, cell, metric, cell.edited_ft)
        out.append({**cell_keys(cell), "metric": metric, "base": r["base"], "edited": r["edited"],
                    "base_ft": r["base_ft"], "edited_ft": r["value"], "retention": r["ratio"],
                    "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n_images": r["n_images"],
                    "_replicates": r["replicates"]})
    return out


def curve_rows(scores: ModelScores, cell: Cell, total_steps: int) -> list[dict]:
    """Retention of the primary metric at step 0, every snapshot and the end of fine-tuning.

    Snapshots are generated for the case's source prompt only (the cost of a curve is then one
    prompt per snapshot), so every point of a curve, the end included, reads that prompt; for
    efficacy this is the table's own definition."""
    metric = PRIMARY[cell.case.task]
    # Step 0 is the edited model itself: retention 1 by definition (NaN if the edit did nothing).
    moved = scores.estimate(cell.edited, cell.case, metric, roles=("source",)).value != \
        scores.estimate("base", cell.case, metric, roles=("source",)).value
    start = 1.0 if moved else float("nan")
    rows = [{**cell_keys(cell), "metric": metric, "step": 0, "retention": start, "ci_low": start, "ci_high": start}]
    common = sorted(set(scores.steps(cell.edited_ft)) & set(scores.steps(cell.base_ft)))
    for step in common + [-1]:
        r = ratio_row(scores, cell, metric, cell.edited_ft, step=step, roles=("source",))
        rows.append({**cell_keys(cell), "metric": metric, "step": total_steps if step == -1 else step,
                     "retention": r["ratio"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]})
    return rows


def reedit_rows(scores: ModelScores, cell: Cell) -> list[dict]:
    """Does applying the edit again restore it, and at what cost in specificity and quality?"""
    reedited = f"{cell.edited_ft}/reedit"
    out = []
    for metric in metrics_of_case(cell.case):
        r = ratio_row(scores, cell, metric, reedited)
        eft = scores.estimate(cell.edited_ft, metric_case(metric, cell.case), metric).value
        out.append({**cell_keys(cell), "metric": metric, "edited": r["edited"], "edited_ft": eft,
                    "reedited": r["value"], "restored": r["ratio"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                    "n_images": r["n_images"]})
    return out


def transfer_rows(scores: ModelScores, cell: Cell) -> list[dict]:
    """An adapter trained on the base, applied to the edited model, measured like edited_ft."""
    transfer = f"{cell.edited}/transfer/{cell.finetuner}/{cell.subject}"
    out = []
    for metric in metrics_of_case(cell.case):
        r = ratio_row(scores, cell, metric, transfer)
        own = ratio_row(scores, cell, metric, cell.edited_ft)
        out.append({**cell_keys(cell), "metric": metric, "transfer": r["value"], "retention_transfer": r["ratio"],
                    "ci_low": r["ci_low"], "ci_high": r["ci_high"], "retention_own_ft": own["ratio"],
                    "n_images": r["n_images"]})
    return out


def judge_validity(table: pd.DataFrame, model: str) -> list[dict]:
    """How often the CLIP judge's decision agrees with the reader's on the same images, per task."""
    out = []
    for task, rows in table[table["task"] != "quality"].groupby("task"):
        if task == "debias":
            agree = (rows["reader_attr"] == rows["judge_attr"]).to_numpy()
        else:
            agree = ((rows["reader_hit"] > 0.5) == (rows["judge_hit"] > 0.5)).to_numpy()
        out.append({"model": model, "task": task, "agreement": float(agree.mean()), "n_images": int(agree.size)})
    return out


def table_frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{k: r[k] for k in columns} for r in rows], columns=columns)


def finetune_quality_rows(scores: ModelScores, model: str) -> list[dict]:
    """Did each fine-tuned state learn its subject? (Retention after a fine-tune that learned
    nothing says little about persistence.)"""
    out = []
    for state in sorted(scores.states()):
        if not scores.has_role(state, "subject"):
            continue
        est = scores.estimate(state, None, "subject_fidelity")
        low, high = percentile_interval(est.replicates)
        parsed = parse_state(state)
        out.append({"model": model, "state": state, "kind": parsed.kind, **parsed.parts, "subject_fidelity": est.value,
                    "ci_low": low, "ci_high": high, "n_images": est.n_images})
    return out
