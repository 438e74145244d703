"""From scored images to the persistence table (design.md section 3) and its extensions.

Every number comes with the replicates of one paired bootstrap (metrics.bootstrap): the same
resampling of fine-tune seeds and of (prompt, image) cells is applied to all states of a model,
so each retention interval accounts for the sampling noise of all four states and for the
fine-tune's own randomness at once. Each row carries the edit's effect (edited - base) with its
interval; retention, a ratio over that effect, is stated only where the effect is established.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import InputError
from ..grid import GridCell
from ..metrics.bootstrap import draw_indices, draw_seeds, dropped, percentile_interval, resample, retention
from ..metrics.task_metrics import METRICS, attribute_coverage, metrics_of_case, reduce_grid, sampling_debias_floor
from ..states import parse_state
from ..tasks.cases import EditCase
from .prompts import PRIMARY, case_key, case_probes, probe_image_count

log = logging.getLogger("editpersist")

COLUMNS = ["model", "family", "editor", "task", "edit", "finetuner", "ft_data", "relation", "metric", "base",
           "edited", "base_ft", "edited_ft", "retention", "ci_low", "ci_high", "n_images",
           "effect", "effect_ci_low", "effect_ci_high", "n_seeds", "replicates_dropped", "note", "ft_fidelity",
           "target_reach"]


@dataclass
class Estimate:
    """A metric of one state (pooled over its fine-tune seeds): the point value and its
    bootstrap replicates (all NaN for a metric without an interval)."""

    value: float
    replicates: np.ndarray
    n_images: int
    n_seeds: int
    note: str = ""
    # debias_score only: the share of images showing one of the attributes, the images its
    # shares are taken among (a model that draws 25 of 32 triangles purple is scored on 7), and
    # what a model balanced among those images would score from sampling alone.
    coverage: float = float("nan")
    floor: float = float("nan")


@dataclass
class ModelScores:
    """One model's scored images, indexed for the metrics, with a cache of estimates.

    `image_counts`: images each probe role was generated with (source, positive, negative,
    subject, quality, and "snapshot" for the source prompt at a fine-tune snapshot); the prompts
    an edit is fitted on have the source's (prompts.probe_image_count). A prompt used in several
    roles has the largest count; each use reads its own first images.
    None: every prompt of a grid must have the same count."""

    table: pd.DataFrame
    features: np.ndarray
    references: dict  # metrics.task_metrics.fit_references
    scorer: str  # "reader" (the toy world's ground truth) or "judge"
    samples: int
    seed: int
    image_counts: dict[str, int] | None = None
    _groups: dict = field(default_factory=dict)
    _roles: set = field(default_factory=set)  # (state, step, role) with scored images
    _steps: dict = field(default_factory=dict)  # state -> its snapshot steps, ascending
    _cache: dict = field(default_factory=dict)
    _warned: bool = False

    def __post_init__(self):
        # Indexed once: every row of every table asks these, so none may scan the table.
        self._groups = {k: g for k, g in self.table.groupby(["state", "step", "case", "role"], sort=False)}
        self._roles = {(state, step, role) for state, step, _, role in self._groups}
        self._steps = {}
        for state, step, _ in sorted(self._roles):
            steps = self._steps.setdefault(state, [])
            if step >= 0 and (not steps or steps[-1] != step):
                steps.append(int(step))

    def states(self) -> set[str]:
        return set(self._steps)

    def has_role(self, state: str, role: str, step: int = -1) -> bool:
        return (state, step, role) in self._roles

    def steps(self, state: str) -> list[int]:
        return self._steps.get(state, [])

    def _values(self, rows: pd.DataFrame, metric: str) -> np.ndarray:
        kind = METRICS[metric].kind
        if kind in ("fid", "kid"):
            return rows["feature"].to_numpy()
        if kind == "mean":
            return rows["clip_score"].to_numpy()
        if kind == "debias":
            return rows[f"{self.scorer}_attr"].to_numpy()
        hits = rows[f"{self.scorer}_hit"].to_numpy(dtype=float)
        if np.isnan(hits).any():
            raise InputError(f"scorer {self.scorer!r} has no reading for these images (is there a reader?)")
        return hits if self.scorer == "reader" else (hits > 0.5).astype(float)

    def _width(self, case: EditCase | None, roles: tuple[str, ...], step: int) -> int | None:
        """Images per prompt the metric reads: the fewest any of its prompts was generated with."""
        counts = self.image_counts
        if counts is None:
            return None
        if step >= 0:
            return counts["snapshot"]
        probes = case_probes(case) if case is not None else []
        widths = [probe_image_count(case, role, probe, counts) for role, probe in probes if role in roles]
        return min(widths or [counts[r] for r in roles])

    def grid(self, state: str, case: EditCase | None, metric: str, step: int = -1,
             roles: tuple[str, ...] | None = None) -> np.ndarray:
        """The metric's data as a prompts x images grid (rows sorted by prompt, columns by index);
        `roles` narrows the probe roles the metric reads."""
        key = case_key(case) if case is not None else ""
        roles = roles or METRICS[metric].roles
        parts = [self._groups[g] for role in roles if (g := (state, step, key, role)) in self._groups]
        if not parts:
            raise InputError(f"no scored images of {state!r} (step {step}) for {metric} of {key or 'quality'}")
        rows = pd.concat(parts).sort_values(["prompt", "index"])
        n = rows.groupby("prompt", sort=True).size()
        width = self._width(case, roles, step)
        short = n[n < (width or n.max())]
        if len(short):
            raise InputError(f"{state!r} (step {step}): prompt {short.index[0]!r} has {short.iloc[0]} images for "
                             f"{metric}, expected {width or n.max()} (an interrupted or mixed generation?)")
        rows = rows.groupby("prompt", sort=True).head(width or n.max())
        return self._values(rows, metric).reshape(len(n), width or int(n.max()))

    def estimate(self, states: str | tuple[str, ...], case: EditCase | None, metric: str, step: int = -1,
                 roles: tuple[str, ...] | None = None) -> Estimate:
        """The metric of one state, or of one state's fine-tune seeds pooled (`states`: one per
        seed, in the same seed order for every state they are compared with)."""
        states = (states,) if isinstance(states, str) else tuple(states)
        key = (states, case_key(case) if case is not None else "", metric, step, roles)
        if key not in self._cache:
            self._cache[key] = self._estimate(states, case, metric, step, roles)
        return self._cache[key]

    def _estimate(self, states, case, metric, step, roles) -> Estimate:
        grids = [self.grid(s, case, metric, step, roles) for s in states]
        if len({g.shape for g in grids}) > 1:
            raise InputError(f"fine-tune seeds of {states[0]!r} have different image grids: "
                             f"{[g.shape for g in grids]}")
        stack = np.stack(grids)  # [S, P, N]
        m = METRICS[metric]
        extra = {"desired": np.array(case.debias.ratios) if m.kind == "debias" else None,
                 "features": self.features, "references": self.references}
        value = float(reduce_grid(m, stack.reshape(1, -1, stack.shape[-1]), **extra)[0])
        note = self._fid_note(stack.size) if m.kind == "fid" else ""
        coverage = floor = float("nan")
        if m.kind == "debias":
            coverage, floor = attribute_coverage(stack), sampling_debias_floor(stack, extra["desired"])
        if m.interval:
            rows, cols = draw_indices(stack.shape[1:], self.samples, self.seed)
            seeds = draw_seeds(len(states), self.samples, self.seed)
            reps = reduce_grid(m, resample(stack, rows, cols, seeds), **extra)
        else:
            reps = np.full(self.samples, np.nan)
        return Estimate(value, reps, stack.size, len(states), note, coverage, floor)

    def _fid_note(self, n_images: int) -> str:
        dim = self.features.shape[1]
        if n_images >= 2 * dim:
            return ""
        if not self._warned:  # once per model; every such row carries the note
            log.warning("FID from %d images of %d-d features: the covariance is poorly estimated below %d images, "
                        "FID is biased upward; compare KID", n_images, dim, 2 * dim)
            self._warned = True
        return f"fid from {n_images} images < 2 x {dim} feature dims: biased upward"


def metric_case(metric: str, case: EditCase) -> EditCase | None:
    """Quality metrics are measured on the shared caption set, not the case's prompts."""
    return None if METRICS[metric].roles == ("quality",) else case


@dataclass(frozen=True)
class Cell:
    """One (model, editor, case, fine-tuner, fine-tune data) cell of the grid, with its seeds."""

    model: str
    family: str
    editor: str
    case: EditCase
    finetuner: str
    subject: str
    relation: str
    seeds: tuple[int, ...] = (0,)

    @property
    def grid(self) -> GridCell:
        return GridCell(self.model, self.editor, self.case.task, self.case.name, self.finetuner, self.subject,
                        self.seeds)

    @property
    def edited(self) -> str:
        return self.grid.start


def min_effect_of(min_effect: float | dict, metric: str) -> float:
    """`evaluation.min_effect`: one number for every metric, or one per metric (absent: 0)."""
    return float(min_effect.get(metric, 0.0)) if isinstance(min_effect, dict) else float(min_effect)


def effect_problem(metric: str, effect: float, low: float, high: float, threshold: float) -> str:
    """Why an edit's effect on a metric is not established ("" when it is): retention divides by
    this effect, so it is stated only where the effect is clearly not 0."""
    if not METRICS[metric].interval:
        return f"{metric} has no interval (a point estimate on all images; see kid)"
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 <= high:
        return f"edit effect not established: its interval [{low:.3g}, {high:.3g}] includes 0"
    if abs(effect) < threshold:
        return f"edit effect not established: |{effect:.3g}| < min_effect {threshold:g}"
    return ""


def subject_fidelity(scores: ModelScores, states: list[str]) -> float:
    """Share of a fine-tuned state's images of "a sks <class>" that show the subject, pooled over
    its seeds (NaN where the subject prompt was not generated)."""
    if not all(scores.has_role(s, "subject") for s in states):
        return float("nan")
    return scores.estimate(tuple(states), None, "subject_fidelity").value


def target_reach(scores: ModelScores, case: EditCase, base_fts: list[str]) -> float:
    """Share of the fine-tuned base's images of the edit's target prompt ("a blue circle") that
    show the target, pooled over its seeds: below the unedited model's, the fine-tune erased the
    target itself, which no edit of the source can be expected to keep (NaN: no target prompt)."""
    if case.target is None or not all(scores.has_role(s, "target") for s in base_fts):
        return float("nan")
    return scores.estimate(tuple(base_fts), case, "target_fidelity").value


def ratio_row(scores: ModelScores, cell: Cell, metric: str, numerators: list[str], min_effect: float | dict = 0.0,
              step: int = -1, roles: tuple[str, ...] | None = None, base_fts: list[str] | None = None) -> dict:
    """The edit's effect (edited - base) and (numerator - base_ft) / effect for one metric, with
    intervals; the numerator and base_ft (one state per fine-tune seed, `base_fts` default: the
    cell's) at step `step` (-1: the end). The ratio is given only where the effect is
    established (`note` says why not)."""
    case = metric_case(metric, cell.case)
    base_fts = cell.grid.base_fts if base_fts is None else base_fts
    base, edited = (scores.estimate(s, case, metric, -1, roles) for s in ("base", cell.edited))
    base_ft = scores.estimate(tuple(base_fts), case, metric, step, roles)
    num = scores.estimate(tuple(numerators), case, metric, step, roles)
    effect_reps = edited.replicates - base.replicates
    effect_low, effect_high = percentile_interval(effect_reps)
    effect = edited.value - base.value
    reps = retention(base.replicates, edited.replicates, base_ft.replicates, num.replicates)
    problem = effect_problem(metric, effect, effect_low, effect_high, min_effect_of(min_effect, metric))
    n_dropped = dropped(reps) if METRICS[metric].interval else 0
    ratio, (low, high) = float("nan"), (float("nan"), float("nan"))
    if not problem:
        ratio, (low, high) = float(retention(base.value, edited.value, base_ft.value, num.value)), percentile_interval(reps)
    notes = [problem, num.note or base.note]
    if METRICS[metric].kind == "debias":
        notes.append(f"shares are among the images that show an attribute: {edited.coverage:.2f} of the edited "
                     f"model's, {num.coverage:.2f} of this state's; balanced among those, sampling alone would "
                     f"score {edited.floor:.3f} and {num.floor:.3f}")
    if n_dropped:
        notes.append(f"{n_dropped} of {len(reps)} replicates had no effect and were dropped")
    return {"base": base.value, "edited": edited.value, "base_ft": base_ft.value, "value": num.value,
            "ratio": ratio, "ci_low": low, "ci_high": high, "n_images": num.n_images, "n_seeds": num.n_seeds,
            "effect": effect, "effect_ci_low": effect_low, "effect_ci_high": effect_high,
            "replicates_dropped": n_dropped, "note": "; ".join(n for n in notes if n), "established": not problem,
            # A fine-tune that did not learn its subject says little about persistence.
            "ft_fidelity": float(np.minimum(subject_fidelity(scores, numerators),
                                            subject_fidelity(scores, base_fts))),
            "target_reach": target_reach(scores, cell.case, base_fts),
            "replicates": reps if not problem else np.full_like(reps, np.nan)}


def cell_keys(cell: Cell) -> dict:
    return {"model": cell.model, "family": cell.family, "editor": cell.editor, "task": cell.case.task,
            "edit": cell.case.name, "finetuner": cell.finetuner, "ft_data": cell.subject, "relation": cell.relation}


EFFECT_KEYS = ("effect", "effect_ci_low", "effect_ci_high", "n_seeds", "replicates_dropped", "note", "ft_fidelity",
               "target_reach")


def persistence_rows(scores: ModelScores, cell: Cell, min_effect: float | dict = 0.0) -> list[dict]:
    out = []
    for metric in metrics_of_case(cell.case, scores.scorer):
        r = ratio_row(scores, cell, metric, cell.grid.edited_fts, min_effect)
        out.append({**cell_keys(cell), "metric": metric, "base": r["base"], "edited": r["edited"],
                    "base_ft": r["base_ft"], "edited_ft": r["value"], "retention": r["ratio"],
                    "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n_images": r["n_images"],
                    **{k: r[k] for k in EFFECT_KEYS}, "_replicates": r["replicates"]})
    return out


def curve_rows(scores: ModelScores, cell: Cell, total_steps: int, min_effect: float | dict = 0.0) -> list[dict]:
    """Retention of the primary metric at step 0, every snapshot and the end of fine-tuning.

    Snapshots are generated for the case's source prompt only (the cost of a curve is then one
    prompt per snapshot), so every point of a curve, the end included, reads that prompt; for
    efficacy this is the table's own definition. Fine-tunes keep snapshots on their first seed
    only (a curve needs many points more than tight ones), so a curve pairs the seeds that have
    snapshots, end point included, and says how many (`n_seeds`); without snapshots it is every
    seed's. A snapshot step some paired state lacks gets a row with no value and a note, not
    silence."""
    metric = PRIMARY[cell.case.task]
    pairs = [(b, e) for b, e in zip(cell.grid.base_fts, cell.grid.edited_fts) if scores.steps(b) or scores.steps(e)]
    base_fts, edited_fts = map(list, zip(*pairs)) if pairs else (cell.grid.base_fts, cell.grid.edited_fts)

    def row(step: int, r: dict) -> dict:
        return {**cell_keys(cell), "metric": metric, "step": step, "retention": r["ratio"], "ci_low": r["ci_low"],
                "ci_high": r["ci_high"], "n_seeds": len(edited_fts), "note": r["note"]}

    final = ratio_row(scores, cell, metric, edited_fts, min_effect, roles=("source",), base_fts=base_fts)
    # Step 0 is the edited model itself: retention 1 by definition, where the edit did something.
    start = 1.0 if final["established"] else float("nan")
    rows = [row(0, {"ratio": start, "ci_low": start, "ci_high": start,
                    "note": "" if final["established"] else final["note"]})]
    states = base_fts + edited_fts
    for step in sorted(set().union(*(scores.steps(s) for s in states))):
        missing = [s for s in states if step not in scores.steps(s)]
        if missing:
            nan = float("nan")
            rows.append(row(step, {"ratio": nan, "ci_low": nan, "ci_high": nan, "note": f"no snapshot in {missing[0]}"}))
            continue
        rows.append(row(step, ratio_row(scores, cell, metric, edited_fts, min_effect, step=step, roles=("source",),
                                        base_fts=base_fts)))
    rows.append(row(total_steps, final))
    return rows


def reedit_rows(scores: ModelScores, cell: Cell, min_effect: float | dict = 0.0) -> list[dict]:
    """Does applying the edit again restore it, and at what cost in specificity and quality?"""
    out = []
    for metric in metrics_of_case(cell.case, scores.scorer):
        r = ratio_row(scores, cell, metric, cell.grid.reedited, min_effect)
        eft = scores.estimate(tuple(cell.grid.edited_fts), metric_case(metric, cell.case), metric).value
        out.append({**cell_keys(cell), "metric": metric, "edited": r["edited"], "edited_ft": eft,
                    "reedited": r["value"], "restored": r["ratio"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                    "n_images": r["n_images"], "n_seeds": r["n_seeds"], "note": r["note"],
                    "ft_fidelity": r["ft_fidelity"]})
    return out


def transfer_rows(scores: ModelScores, cell: Cell, min_effect: float | dict = 0.0) -> list[dict]:
    """An adapter trained on the base, applied to the edited model, measured like edited_ft."""
    out = []
    for metric in metrics_of_case(cell.case, scores.scorer):
        r = ratio_row(scores, cell, metric, cell.grid.transfers, min_effect)
        own = ratio_row(scores, cell, metric, cell.grid.edited_fts, min_effect)
        out.append({**cell_keys(cell), "metric": metric, "transfer": r["value"], "retention_transfer": r["ratio"],
                    "ci_low": r["ci_low"], "ci_high": r["ci_high"], "retention_own_ft": own["ratio"],
                    "n_images": r["n_images"], "n_seeds": r["n_seeds"], "note": r["note"],
                    "ft_fidelity": r["ft_fidelity"]})
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
