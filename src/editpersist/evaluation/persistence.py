"""From scored images to the persistence table (design.md section 3) and its extensions.

Every state is measured on its own images: a fine-tuned state once per fine-tune seed, on as many
images as the unedited and edited models (so no metric compares states of different image
counts), and a cell's retention is the mean of its seeds' retentions. Its interval is seed-level
(metrics.seed_interval): a t-interval across the seeds' retentions with the variance of a paired
bootstrap of prompts and images added, the same draws applied to every state and seed of a
model. Each row carries the edit's effect (edited - base) with its interval; retention, a ratio
over that effect, is stated only where the effect is established. A fine-tune seed that did not
learn its subject, or after which the unedited model no longer draws the edit's target, leaves
its cell (`SeedRule`, `kept_seeds`): every table that states a retention reads it through
`rule_cell`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..errors import InputError
from ..grid import GridCell
from ..metrics.bootstrap import (draw_indices, dropped, percentile_interval, resample_each_seed, retention,
                                 with_share_floor)
from ..metrics.seed_interval import seed_level_interval
from ..metrics.task_metrics import METRICS, attribute_coverage, metrics_of_case, reduce_grid, sampling_debias_floor
from ..states import State
from ..tasks.cases import EditCase
from .prompts import PRIMARY, case_key, case_probes, probe_image_count

log = logging.getLogger("editpersist")

SEED_COLUMNS = ["model", "editor", "task", "edit", "finetuner", "ft_data", "metric", "seed", "base_ft", "edited_ft",
                "retention", "ft_fidelity", "target_reach", "kept"]


@dataclass
class Estimate:
    """A metric of one state, or of one state per fine-tune seed: each state's value on its own
    images (`per_seed`, [S]) and its bootstrap replicates (`replicates`, [S, B]: prompts and
    images resampled, the state kept; all NaN for a metric without an interval)."""

    per_seed: np.ndarray
    replicates: np.ndarray
    n_images: int  # images each state's value rests on
    note: str = ""
    # debias_score only: the share of images showing one of the attributes, the images its
    # shares are taken among (a model that draws 25 of 32 triangles purple is scored on 7), and
    # what a model balanced among those images would score from sampling alone (seeds averaged).
    coverage: float = float("nan")
    floor: float = float("nan")

    @property
    def value(self) -> float:
        """The mean over the seeds of each state's value."""
        return float(np.mean(self.per_seed))

    @property
    def n_seeds(self) -> int:
        return len(self.per_seed)


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
    # Inception features of the quality images (same rows as `features`) and their reference
    # fits (task_metrics.fit_inception_references); None: the study has no Inception metrics.
    inception: np.ndarray | None = None
    inception_references: dict | None = None
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
        """The metric of one state, or of one state per fine-tune seed (`states`, in the seed order
        of every state they are compared with), each on its own images."""
        states = (states,) if isinstance(states, str) else tuple(states)
        parts = [self._state_estimate(s, case, metric, step, roles) for s in states]
        if len({p.n_images for p in parts}) > 1:
            raise InputError(f"fine-tune seeds of {states[0]!r} have different image grids for {metric}: "
                             f"{[p.n_images for p in parts]} images")
        return Estimate(np.concatenate([p.per_seed for p in parts]), np.concatenate([p.replicates for p in parts]),
                        parts[0].n_images, parts[0].note, float(np.mean([p.coverage for p in parts])),
                        float(np.mean([p.floor for p in parts])))

    def _state_estimate(self, state: str, case: EditCase | None, metric: str, step: int,
                        roles: tuple[str, ...] | None) -> Estimate:
        key = (state, case_key(case) if case is not None else "", metric, step, roles)
        if key not in self._cache:
            self._cache[key] = self._estimate(state, case, metric, step, roles, "|".join(map(str, key)))
        return self._cache[key]

    def _estimate(self, state, case, metric, step, roles, key: str) -> Estimate:
        grid = self.grid(state, case, metric, step, roles)
        m = METRICS[metric]
        features, references = ((self.inception, self.inception_references) if m.features == "inception"
                                 else (self.features, self.references))
        extra = {"desired": np.array(case.debias.ratios) if m.kind == "debias" else None,
                 "features": features, "references": references}
        est = grid_estimate(grid, m, self.samples, self.seed, key, extra)
        if m.kind == "fid":
            est.note = self._fid_note(metric, grid.size, features.shape[1])
        return est

    def metrics_of(self, case: EditCase) -> tuple[str, ...]:
        return metrics_of_case(case, self.scorer, self.inception is not None)

    def _fid_note(self, metric: str, n_images: int, dim: int) -> str:
        if n_images >= 2 * dim:
            return ""
        if not self._warned:  # once per model; every such row carries the note
            log.warning("%s from %d images of %d-d features: the covariance is poorly estimated below %d images, "
                        "the distance is biased upward; compare the kernel distance", metric, n_images, dim, 2 * dim)
            self._warned = True
        return f"{metric} from {n_images} images < 2 x {dim} feature dims: biased upward"


def grid_estimate(grid: np.ndarray, m, samples: int, seed: int, key: str, extra: dict | None = None) -> Estimate:
    """One state's metric from its prompts x images grid, with `samples` bootstrap replicates
    (the draws depend only on the grid's shape and `seed`, so every state lines up); a share's
    replicates are topped up to the Jeffreys variance (bootstrap.with_share_floor), keyed by
    `key`, the state's own name."""
    extra = extra or {}
    stack = grid[None]  # [1, P, N]
    value = reduce_grid(m, stack, **extra)  # [1]
    coverage = floor = float("nan")
    if m.kind == "debias":
        coverage, floor = attribute_coverage(stack), sampling_debias_floor(stack, extra["desired"])
    if m.interval:
        rows, cols = draw_indices(grid.shape, samples, seed)
        reps = reduce_grid(m, resample_each_seed(stack, rows, cols), **extra)  # [1, B]
        if m.kind == "share":
            reps = with_share_floor(value, reps, grid.size, key, seed)
    else:
        reps = np.full((1, samples), np.nan)
    return Estimate(np.asarray(value, dtype=float), reps, grid.size, "", coverage, floor)


def retention_by_seed(base: Estimate, edited: Estimate, base_ft: Estimate, num: Estimate):
    """Each seed's retention (num_s - base_ft_s) / (edited - base) [S], its replicates [S, B], and
    the seed-level interval of their mean (metrics.seed_interval)."""
    values = retention(base.value, edited.value, base_ft.per_seed, num.per_seed)
    reps = retention(base.replicates[0], edited.replicates[0], base_ft.replicates, num.replicates)
    return values, reps, seed_level_interval(values, reps.mean(0))


def metric_case(metric: str, case: EditCase) -> EditCase | None:
    """Quality metrics are measured on the shared caption set, not the case's prompts."""
    return None if METRICS[metric].roles == ("quality",) else case


@dataclass(frozen=True)
class Cell:
    """A grid cell with what its tables read besides its states: the model's family, the edit
    case, and how the fine-tune's subject relates to the edit."""

    grid: GridCell
    family: str
    case: EditCase
    relation: str

    def __post_init__(self):
        if (self.grid.task, self.grid.edit) != (self.case.task, self.case.name):
            raise ValueError(f"{self.grid}: cell paired with the case {self.case.task}/{self.case.name}")

    model = property(lambda self: self.grid.model)
    editor = property(lambda self: self.grid.editor)
    finetuner = property(lambda self: self.grid.finetuner)
    subject = property(lambda self: self.grid.subject)
    seeds = property(lambda self: self.grid.seeds)

    @property
    def edited(self) -> str:
        return self.grid.start

    def with_seeds(self, seeds: tuple[int, ...]) -> Cell:
        return replace(self, grid=replace(self.grid, seeds=seeds))


def min_effect_of(min_effect: float | dict, metric: str) -> float:
    """`evaluation.min_effect`: one number for every metric, or one per metric (absent: 0)."""
    return float(min_effect.get(metric, 0.0)) if isinstance(min_effect, dict) else float(min_effect)


def effect_problem(metric: str, effect: float, low: float, high: float, threshold: float) -> str:
    """Why an edit's effect on a metric is not established ("" when it is): retention divides by
    this effect, so it is stated only where the effect is clearly not 0."""
    if not METRICS[metric].interval:
        kernel = "kid_inception" if METRICS[metric].features == "inception" else "kd_judge"
        return f"{metric} has no interval (a point estimate on all images; see {kernel})"
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 <= high:
        return f"edit effect not established: its interval [{low:.3g}, {high:.3g}] includes 0"
    if abs(effect) < threshold:
        return f"edit effect not established: |{effect:.3g}| < min_effect {threshold:g}"
    return ""


def subject_fidelities(scores: ModelScores, states: list[str]) -> np.ndarray:
    """Per fine-tuned state: the share of its images of "a sks <class>" that show the subject
    (NaN where the subject prompt was not generated)."""
    return np.array([scores.estimate(s, None, "subject_fidelity").value if scores.has_role(s, "subject")
                     else float("nan") for s in states])


def target_reaches(scores: ModelScores, case: EditCase, base_fts: list[str]) -> np.ndarray:
    """Per fine-tuned base: the share of its images of the edit's target prompt ("a blue circle")
    that show the target. Below the unedited model's, the fine-tune erased the target itself,
    which no edit of the source can be expected to keep (NaN: no target prompt)."""
    if case.target is None:
        return np.full(len(base_fts), np.nan)
    return np.array([scores.estimate(s, case, "target_fidelity").value if scores.has_role(s, "target")
                     else float("nan") for s in base_fts])


def seed_fidelities(scores: ModelScores, numerators: list[str], base_fts: list[str]) -> np.ndarray:
    """Per seed: the lower of the subject fidelity of its fine-tuned base and of its numerator
    (edited_ft, or the state compared in its place); a fine-tune that did not learn its subject
    says little about persistence. A side without subject images does not count."""
    with np.errstate(invalid="ignore"):
        return np.fmin(subject_fidelities(scores, numerators), subject_fidelities(scores, base_fts))


@dataclass(frozen=True)
class SeedRule:
    """Which fine-tune seeds a cell keeps (`evaluation.min_ft_fidelity`, `min_target_reach`): a
    seed whose fine-tune shows its subject in fewer of its images, or whose fine-tuned base draws
    the edit's target in fewer, leaves the cell. Unknown values (no such images) keep the seed."""

    min_ft_fidelity: float = 0.0
    min_target_reach: float = 0.0


def kept_seeds(scores: ModelScores, cell: Cell, rule: SeedRule) -> tuple[tuple[int, ...], list[str]]:
    """The cell's fine-tune seeds that pass `rule`, and one note per seed left out."""
    fidelity = seed_fidelities(scores, cell.grid.edited_fts, cell.grid.base_fts)
    reach = target_reaches(scores, cell.case, cell.grid.base_fts)
    kept, notes = [], []
    for seed, fid, tr in zip(cell.seeds, fidelity, reach):
        if fid < rule.min_ft_fidelity:
            notes.append(f"seed {seed} left out: its fine-tune shows the subject in {fid:.2f} of images "
                         f"(min_ft_fidelity {rule.min_ft_fidelity:g})")
        elif tr < rule.min_target_reach:
            notes.append(f"seed {seed} left out: its fine-tuned base draws the target in {tr:.2f} of images "
                         f"(min_target_reach {rule.min_target_reach:g})")
        else:
            kept.append(seed)
    return tuple(kept), notes


NO_SEED = "every fine-tune seed left out: retention not stated"


def rule_cell(scores: ModelScores, cell: Cell, rule: SeedRule) -> tuple[Cell, list[str], bool]:
    """The cell with only the seeds `rule` keeps, the notes on the others, and whether any seed is
    left (if none, the cell with all its seeds, for its values, and no retention is stated). Every
    table reads a cell through this."""
    kept, notes = kept_seeds(scores, cell, rule)
    if not kept:
        return cell, notes + [NO_SEED], False
    return cell.with_seeds(kept), notes, True


def seed_of(state: str) -> int:
    return State.parse(state).seed


def effect_direction_problem(metric: str, effect: float) -> str:
    """Retention measures how much of what an edit set out to do survives: an edit that moved its
    metric against `higher_is_better` did damage there, and the share of damage kept is no
    retention ("" when the edit moved it the right way or not at all)."""
    m = METRICS[metric]
    if effect == 0 or (effect > 0) == m.higher_is_better:
        return ""
    return (f"the edit moved {metric} the wrong way ({effect:+.3g}; "
            f"{'higher' if m.higher_is_better else 'lower'} is better): retention not stated")


@dataclass(frozen=True, eq=False)
class Ratio:
    """One metric of a cell: the edit's effect (edited - base) and, per fine-tune seed,
    (numerator - base_ft) / effect, with intervals. The numerator (`value`) is edited_ft,
    reedited or transfer: each table names it in its column map. `ratio` is the mean of the kept
    seeds' and is stated only where the effect is `established` (`note` says why not); its
    interval is seed-level (metrics.seed_interval). The `seed_*` arrays hold one entry per seed."""

    base: float
    edited: float
    base_ft: float
    value: float
    ratio: float
    ci_low: float
    ci_high: float
    n_images: int
    n_seeds: int
    effect: float
    effect_ci_low: float
    effect_ci_high: float
    replicates_dropped: int
    note: str
    established: bool
    ft_fidelity: float  # the lowest of its seeds': every seed kept learned its subject this well
    target_reach: float
    seeds: tuple[int, ...]
    seed_base_ft: np.ndarray
    seed_value: np.ndarray
    seed_fidelity: np.ndarray
    seed_reach: np.ndarray
    seed_values: np.ndarray
    seed_replicates: np.ndarray
    effect_replicates: np.ndarray
    edited_replicates: np.ndarray

    def columns(self, names: dict[str, str]) -> dict:
        """A table's columns (`names`: column -> field)."""
        return {column: getattr(self, name) for column, name in names.items()}

    def unstated(self) -> Ratio:
        """The ratio with no retention (its cell kept no fine-tune seed)."""
        nan = float("nan")
        return replace(self, ratio=nan, ci_low=nan, ci_high=nan, established=False, n_seeds=0,
                       seed_values=np.full_like(self.seed_values, nan),
                       seed_replicates=np.full_like(self.seed_replicates, nan))


def _same(*names: str) -> dict[str, str]:
    return {n: n for n in names}


# Each table's columns from a Ratio (column -> field).
EFFECT_COLUMNS = _same("effect", "effect_ci_low", "effect_ci_high", "n_seeds", "replicates_dropped", "note",
                       "ft_fidelity", "target_reach")
PERSISTENCE_COLUMNS = {**_same("base", "edited", "base_ft"), "edited_ft": "value", "retention": "ratio",
                       **_same("ci_low", "ci_high", "n_images"), **EFFECT_COLUMNS}
REEDIT_COLUMNS = {"reedited": "value", "restored": "ratio",
                  **_same("ci_low", "ci_high", "n_images", "n_seeds", "note", "ft_fidelity")}
TRANSFER_COLUMNS = {"transfer": "value", "retention_transfer": "ratio",
                    **_same("ci_low", "ci_high", "n_images", "n_seeds", "note", "ft_fidelity")}
CURVE_COLUMNS = {"retention": "ratio", **_same("ci_low", "ci_high")}
# The persistence table: the cell's keys (cell_keys), the metric, the Ratio's columns.
COLUMNS = ["model", "family", "editor", "task", "edit", "finetuner", "ft_data", "relation", "metric",
           *PERSISTENCE_COLUMNS]


def ratio_row(scores: ModelScores, cell: Cell, metric: str, numerators: list[str], min_effect: float | dict = 0.0,
              step: int = -1, roles: tuple[str, ...] | None = None, base_fts: list[str] | None = None) -> Ratio:
    """The Ratio of one metric with `numerators` (one state per fine-tune seed) over base_ft
    (`base_fts`, default: the cell's), both at step `step` (-1: the end)."""
    case = metric_case(metric, cell.case)
    base_fts = cell.grid.base_fts if base_fts is None else base_fts
    base, edited = (scores.estimate(s, case, metric, -1, roles) for s in ("base", cell.edited))
    base_ft = scores.estimate(tuple(base_fts), case, metric, step, roles)
    num = scores.estimate(tuple(numerators), case, metric, step, roles)
    effect_reps = edited.replicates[0] - base.replicates[0]
    effect_low, effect_high = percentile_interval(effect_reps)
    effect = edited.value - base.value
    problem = (effect_problem(metric, effect, effect_low, effect_high, min_effect_of(min_effect, metric))
               or effect_direction_problem(metric, effect))
    seed_values, seed_reps, iv = retention_by_seed(base, edited, base_ft, num)
    within = seed_reps.mean(0)
    n_dropped = dropped(within) if METRICS[metric].interval else 0
    ratio, low, high = float("nan"), float("nan"), float("nan")
    if not problem:
        ratio, low, high = iv.value, iv.low, iv.high
    notes = [problem, num.note or base.note]
    if not problem and num.n_seeds == 1:
        notes.append("one fine-tune seed: the interval is of images and prompts only")
    if METRICS[metric].kind == "debias":
        notes.append(f"shares are among the images that show an attribute: {edited.coverage:.2f} of the edited "
                     f"model's, {num.coverage:.2f} of this state's; balanced among those, sampling alone would "
                     f"score {edited.floor:.3f} and {num.floor:.3f}")
    if n_dropped:
        notes.append(f"{n_dropped} of {len(within)} replicates had no effect and were dropped")
    fidelity = seed_fidelities(scores, numerators, base_fts)
    reach = target_reaches(scores, cell.case, base_fts)
    return Ratio(
        base=base.value, edited=edited.value, base_ft=base_ft.value, value=num.value, ratio=ratio, ci_low=low,
        ci_high=high, n_images=num.n_images, n_seeds=num.n_seeds, effect=effect, effect_ci_low=effect_low,
        effect_ci_high=effect_high, replicates_dropped=n_dropped, note="; ".join(n for n in notes if n),
        established=not problem,
        ft_fidelity=float(np.nanmin(fidelity)) if np.isfinite(fidelity).any() else float("nan"),
        target_reach=float(np.nanmin(reach)) if np.isfinite(reach).any() else float("nan"),
        seeds=tuple(seed_of(s) for s in numerators), seed_base_ft=base_ft.per_seed, seed_value=num.per_seed,
        seed_fidelity=fidelity, seed_reach=reach,
        seed_values=seed_values if not problem else np.full_like(seed_values, np.nan),
        seed_replicates=seed_reps if not problem else np.full_like(seed_reps, np.nan),
        effect_replicates=effect_reps, edited_replicates=edited.replicates[0])


def ruled_row(scores: ModelScores, cell: Cell, metric: str, numerators_of, min_effect: float | dict,
              rule: SeedRule, **kwargs) -> Ratio:
    """ratio_row on the seeds `rule` keeps (`numerators_of(cell)`: the states compared with
    base_ft, one per seed), the notes on the seeds left out first."""
    ruled, seed_notes, any_kept = rule_cell(scores, cell, rule)
    r = ratio_row(scores, ruled, metric, numerators_of(ruled), min_effect, **kwargs)
    if not any_kept:
        r = r.unstated()
    return replace(r, note="; ".join(n for n in [*seed_notes, r.note] if n))


def cell_keys(cell: Cell) -> dict:
    return {"model": cell.model, "family": cell.family, "editor": cell.editor, "task": cell.case.task,
            "edit": cell.case.name, "finetuner": cell.finetuner, "ft_data": cell.subject, "relation": cell.relation}


def seed_rows(scores: ModelScores, cell: Cell, metric: str, r: Ratio, min_effect: float | dict) -> list[dict]:
    """One row per fine-tune seed of the cell, kept or not (`r`: the cell's ratio on its kept
    seeds): the seed's own base_ft, edited_ft, retention and fine-tune checks, with the seed's
    bootstrap replicates of retention (`_replicates`, for paired comparisons)."""
    every = r if len(r.seeds) == len(cell.seeds) else ratio_row(scores, cell, metric, cell.grid.edited_fts,
                                                                min_effect)
    stated = r.established
    keys = {k: v for k, v in cell_keys(cell).items() if k in SEED_COLUMNS}
    out = []
    for i, seed in enumerate(every.seeds):
        reps = every.seed_replicates[i] if stated else np.full(every.seed_replicates.shape[1], np.nan)
        out.append({**keys, "metric": metric, "seed": seed, "base_ft": every.seed_base_ft[i],
                    "edited_ft": every.seed_value[i],
                    "retention": every.seed_values[i] if stated else float("nan"),
                    "ft_fidelity": every.seed_fidelity[i], "target_reach": every.seed_reach[i],
                    "kept": seed in r.seeds and r.n_seeds > 0, "_replicates": reps,
                    "_edited_replicates": every.edited_replicates})
    return out


def persistence_rows(scores: ModelScores, cell: Cell, min_effect: float | dict = 0.0,
                     rule: SeedRule = SeedRule()) -> list[dict]:
    """The cell's rows of the persistence table, one per metric; the `_` keys carry the seeds'
    values and bootstrap replicates for the summary and the per-seed table."""
    out = []
    for metric in scores.metrics_of(cell.case):
        r = ruled_row(scores, cell, metric, lambda c: c.grid.edited_fts, min_effect, rule)
        out.append({**cell_keys(cell), "metric": metric, **r.columns(PERSISTENCE_COLUMNS),
                    "_seeds": r.seeds if r.n_seeds else (), "_seed_values": r.seed_values,
                    "_seed_replicates": r.seed_replicates, "_effect_replicates": r.effect_replicates,
                    "_edited_replicates": r.edited_replicates,
                    "_by_seed": seed_rows(scores, cell, metric, r, min_effect)})
    return out


def curve_rows(scores: ModelScores, cell: Cell, total_steps: int, min_effect: float | dict = 0.0,
               rule: SeedRule = SeedRule()) -> list[dict]:
    """Retention of the primary metric at step 0, every snapshot and the end of fine-tuning.

    Snapshots are generated for the case's source prompt only (the cost of a curve is then one
    prompt per snapshot), so every point of a curve, the end included, reads that prompt; for
    efficacy this is the table's own definition. Fine-tunes keep snapshots on their first seed
    only (a curve needs many points more than tight ones), so a curve pairs the seeds that have
    snapshots among those `rule` keeps, end point included, and says how many (`n_seeds`; with
    one, the band is of images and prompts only); without snapshots it is every kept seed's. A
    snapshot step some paired state lacks gets a row with no value and a note, not silence."""
    metric = PRIMARY[cell.case.task]
    ruled, seed_notes, any_kept = rule_cell(scores, cell, rule)
    pairs = [(b, e) for b, e in zip(ruled.grid.base_fts, ruled.grid.edited_fts) if scores.steps(b) or scores.steps(e)]
    base_fts, edited_fts = map(list, zip(*pairs)) if pairs else (ruled.grid.base_fts, ruled.grid.edited_fts)
    nan = float("nan")

    def row(step: int, point: dict, note: str) -> dict:
        point = point if any_kept else dict.fromkeys(CURVE_COLUMNS, nan)
        return {**cell_keys(cell), "metric": metric, "step": step, **point,
                "n_seeds": len(edited_fts) if any_kept else 0, "note": "; ".join(n for n in [*seed_notes, note] if n)}

    final = ratio_row(scores, ruled, metric, edited_fts, min_effect, roles=("source",), base_fts=base_fts)
    # Step 0 is the edited model itself: retention 1 by definition, where the edit did something.
    start = 1.0 if final.established else nan
    rows = [row(0, dict.fromkeys(CURVE_COLUMNS, start), "" if final.established else final.note)]
    states = base_fts + edited_fts
    for step in sorted(set().union(*(scores.steps(s) for s in states))):
        missing = [s for s in states if step not in scores.steps(s)]
        if missing:
            rows.append(row(step, dict.fromkeys(CURVE_COLUMNS, nan), f"no snapshot in {missing[0]}"))
            continue
        r = ratio_row(scores, ruled, metric, edited_fts, min_effect, step=step, roles=("source",), base_fts=base_fts)
        rows.append(row(step, r.columns(CURVE_COLUMNS), r.note))
    rows.append(row(total_steps, final.columns(CURVE_COLUMNS), final.note))
    return rows


def reedit_rows(scores: ModelScores, cell: Cell, min_effect: float | dict = 0.0,
                rule: SeedRule = SeedRule()) -> list[dict]:
    """Does applying the edit again restore it, and at what cost in specificity and quality?"""
    out = []
    for metric in scores.metrics_of(cell.case):
        r = ruled_row(scores, cell, metric, lambda c: c.grid.reedited, min_effect, rule)
        ruled = rule_cell(scores, cell, rule)[0]
        eft = scores.estimate(tuple(ruled.grid.edited_fts), metric_case(metric, cell.case), metric).value
        out.append({**cell_keys(cell), "metric": metric, "edited": r.edited, "edited_ft": eft,
                    **r.columns(REEDIT_COLUMNS)})
    return out


def transfer_rows(scores: ModelScores, cell: Cell, min_effect: float | dict = 0.0,
                  rule: SeedRule = SeedRule()) -> list[dict]:
    """An adapter trained on the base, applied to the edited model, measured like edited_ft."""
    out = []
    for metric in scores.metrics_of(cell.case):
        r = ruled_row(scores, cell, metric, lambda c: c.grid.transfers, min_effect, rule)
        own = ruled_row(scores, cell, metric, lambda c: c.grid.edited_fts, min_effect, rule)
        row = {**cell_keys(cell), "metric": metric, **r.columns(TRANSFER_COLUMNS)}
        # The same cell's retention after its own fine-tune, beside the transfer's.
        out.append({**row, "retention_own_ft": own.ratio})
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
        low, high = percentile_interval(est.replicates[0])
        parsed = State.parse(state)
        out.append({"model": model, "state": state, "kind": parsed.kind, **parsed.parts, "subject_fidelity": est.value,
                    "ci_low": low, "ci_high": high, "n_images": est.n_images})
    return out
