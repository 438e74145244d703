"""results/summary.md: the headline findings in words, with intervals, stratum by stratum.

A mean retention, and so a ranking of fine-tuners or editors, is stated only within a stratum
(one model, task and metric): averaging UCE over four tasks against ReFACT over two, or
efficacy against CLIP score, would compare unlike things. Only cells whose edit effect is
established (persistence.effect_problem) and that kept a fine-tune seed have a retention to
average (`states_retention`), and a ranking compares levels on the cells every level has
(`common_cells`): a fine-tuner whose hardest edit was left out would otherwise look better for
it. Two levels are ordered by their paired difference on those cells and seeds
(metrics.seed_interval.combined_interval), not by whether two intervals overlap. Fine-tune
seeds were already kept or left out per seed (persistence.SeedRule): the rows' retentions rest
on the seeds kept, and the summary names the others.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics.seed_interval import SeedInterval, combined_interval
from .prompts import PRIMARY

STRATUM = ("model", "task", "metric")
CELL_ID = ("editor", "edit", "finetuner", "ft_data")


def primary_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["metric"] == PRIMARY[r["task"]]]


def states_retention(row: dict) -> bool:
    """An established effect and at least one kept seed: the cell's retention is a number."""
    return bool(np.isfinite(row["retention"]))


def seed_parts(rows: list[dict], coef: float) -> list[tuple]:
    return [(coef, r["_seeds"], r["_seed_values"], r["_seed_replicates"]) for r in rows]


def mean_interval(rows: list[dict]) -> SeedInterval:
    """The mean retention of cells that state one, seed by seed over the seeds they all kept."""
    return combined_interval(seed_parts(rows, 1 / len(rows)))


def mean_retention(rows: list[dict]) -> dict:
    """Mean retention over the cells that state one, with its seed-level interval."""
    usable = [r for r in rows if states_retention(r)]
    if not usable:
        return {"mean_retention": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "cells": 0,
                "n_seeds": 0}
    iv = mean_interval(usable)
    return {"mean_retention": iv.value, "ci_low": iv.low, "ci_high": iv.high, "cells": len(usable),
            "n_seeds": iv.n_seeds}


def common_cells(stratum: list[dict], by: str) -> list[dict]:
    """The rows stating a retention of the cells (editor, edit, fine-tuner, data less `by`) that
    every level of `by` with such a row has."""
    ident = [k for k in CELL_ID if k != by]
    usable = [r for r in stratum if states_retention(r)]
    levels = {r[by] for r in usable}
    have = {}
    for r in usable:
        have.setdefault(tuple(r[k] for k in ident), set()).add(r[by])
    keep = {key for key, got in have.items() if got == levels}
    return [r for r in usable if tuple(r[k] for k in ident) in keep]


def stratified_ranking(rows: list[dict], by: str) -> pd.DataFrame:
    """Mean retention per value of `by` (finetuner or editor) within each stratum, over the cells
    every value has (`common_cells`), lowest first."""
    out = []
    keys = sorted({tuple(r[k] for k in STRATUM) for r in rows})
    for key in keys:
        stratum = common_cells([r for r in rows if tuple(r[k] for k in STRATUM) == key], by)
        for value in sorted({r[by] for r in stratum}):
            out.append({**dict(zip(STRATUM, key)), by: value, **mean_retention([r for r in stratum if r[by] == value])})
    frame = pd.DataFrame(out, columns=[*STRATUM, by, "mean_retention", "ci_low", "ci_high", "cells", "n_seeds"])
    frame = frame[frame["cells"] > 0]
    return frame.sort_values([*STRATUM, "mean_retention"]).reset_index(drop=True)


def level_difference(rows: list[dict], by: str, high: str, low: str) -> SeedInterval:
    """Mean retention of `high` minus that of `low` on the cells both have, paired seed by seed."""
    ident = [k for k in CELL_ID if k != by]
    pairs = {}
    for r in rows:
        if r[by] in (high, low):
            pairs.setdefault(tuple(r[k] for k in ident), {})[r[by]] = r
    both = [p for p in pairs.values() if len(p) == 2]
    return combined_interval([part for p in both for part in (seed_parts([p[high]], 1 / len(both))
                                                              + seed_parts([p[low]], -1 / len(both)))])


def _fmt(x: float, digits: int = 2) -> str:
    return "NaN" if not np.isfinite(x) else f"{x:.{digits}f}"


def with_interval(value: float, low: float, high: float, digits: int = 2) -> str:
    """'0.50 [0.40, 0.60]'."""
    return f"{_fmt(value, digits)} [{_fmt(low, digits)}, {_fmt(high, digits)}]"


def _interval(row) -> str:
    return with_interval(row["mean_retention"], row["ci_low"], row["ci_high"])


def markdown_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(_fmt(v) if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines)


def ranking_sentence(group: pd.DataFrame, rows: list[dict], by: str) -> str | None:
    """'dora retains least (...), full most (...)' within one stratum, and whether their paired
    difference on the same cells and seeds excludes 0; None with fewer than two values to rank."""
    if len(group) < 2:
        return None
    low, high = group.iloc[0], group.iloc[-1]
    diff = level_difference(common_cells(rows, by), by, high[by], low[by])
    text = (f"by {by}: {low[by]} retains least ({_interval(low)}, {low['cells']} cells), {high[by]} most "
            f"({_interval(high)}, {high['cells']} cells); {high[by]} - {low[by]} "
            f"{with_interval(diff.value, diff.low, diff.high)} on the same cells and {diff.n_seeds} seeds")
    if diff.low > 0:
        return text + ": the order is established"
    return text + ": no order is established"


def stratum_lines(by_ft: pd.DataFrame, by_editor: pd.DataFrame, rows: list[dict]) -> list[str]:
    lines = []
    editors = dict(list(by_editor.groupby(list(STRATUM), sort=True)))
    for key, group in by_ft.groupby(list(STRATUM), sort=True):
        stratum = [r for r in rows if tuple(r[k] for k in STRATUM) == key]
        parts = [s for s in (ranking_sentence(group, stratum, "finetuner"),
                             ranking_sentence(editors.get(key, group.iloc[:0]), stratum, "editor")) if s]
        if parts:
            lines.append(f"- **{' / '.join(key)}**: " + "; ".join(parts) + ".")
    return lines or ["- No stratum has two fine-tuners or editors with established effects to rank."]


def finetune_quality_lines(fq: pd.DataFrame, threshold: float) -> list[str]:
    if fq is None or not len(fq):
        return []
    weak = fq[fq["subject_fidelity"] < threshold]
    lines = ["## Did fine-tuning learn its subject?", "",
             f"Share of images of the instance prompt (\"a <identifier> <class>\") that show the subject, over "
             f"{len(fq)} fine-tuned states: median {fq['subject_fidelity'].median():.2f}, lowest "
             f"{fq['subject_fidelity'].min():.2f}. A cell whose fine-tune did not learn its subject says little "
             "about persistence."]
    if len(weak):
        lines += ["", f"States below {threshold}:", "",
                  markdown_table(weak[["model", "state", "subject_fidelity", "ci_low", "ci_high"]])]
    return lines + [""]


def cell_table(prim: list[dict]) -> pd.DataFrame:
    keys = ("model", "editor", "task", "edit", "finetuner", "ft_data", "relation", "metric", "base", "edited",
            "edited_ft", "effect", "effect_ci_low", "effect_ci_high", "retention", "ci_low", "ci_high", "n_seeds",
            "ft_fidelity", "target_reach", "note")
    return pd.DataFrame([{k: r[k] for k in keys} for r in prim])


def named_seeds(seeds: list[dict], column: str) -> str:
    """"model/editor/task/edit/finetuner seed k (value)" for each per-seed row, the value being its
    `column`."""
    return ", ".join(f"{r['model']}/{r['editor']}/{r['task']}/{r['edit']}/{r['finetuner']} seed {r['seed']} "
                     f"({r[column]:.2f})" for r in seeds)


def left_out_lines(prim: list[dict], min_ft_fidelity: float, min_target_reach: float) -> list[str]:
    """The fine-tune seeds persistence.SeedRule left out of their cells, by reason, and the cells
    left with none."""
    seeds = [s for r in prim for s in r["_by_seed"] if not s["kept"]]
    weak = [s for s in seeds if s["ft_fidelity"] < min_ft_fidelity]
    gone = [s for s in seeds if s not in weak and s["target_reach"] < min_target_reach]
    lines = []
    if weak:
        lines.append(f"- {len(weak)} fine-tune seeds are left out of their cells because their fine-tune did not learn "
                     "its subject (ft_fidelity, the lower of that seed's base_ft's and edited_ft's, under "
                     f"`evaluation.min_ft_fidelity` {min_ft_fidelity:g}): {named_seeds(weak, 'ft_fidelity')}.")
    if gone:
        lines.append(f"- {len(gone)} fine-tune seeds are left out of their cells because their fine-tune erased the "
                     "edit's target itself: that seed's fine-tuned unedited model draws it when asked for it in under "
                     f"`evaluation.min_target_reach` {min_target_reach:g} of its images (target_reach), so no edit "
                     f"that leads to the target could have kept it: {named_seeds(gone, 'target_reach')}.")
    empty = [r for r in prim if r["n_seeds"] == 0]
    if empty:
        names = ", ".join(f"{r['model']}/{r['editor']}/{r['task']}/{r['edit']}/{r['finetuner']}" for r in empty)
        lines.append(f"- {len(empty)} cells kept no fine-tune seed and state no retention: {names}.")
    return lines


# A cell keeps its edit when its whole interval is at or above KEEP, loses it when at or below LOSE.
KEEP, LOSE = 0.8, 0.2


def verdict(row: dict) -> str:
    """What a stated retention decides: "keeps", "loses", "partly" (interval inside (LOSE, KEEP)),
    or why it decides nothing: "one seed" (no seed-to-seed spread known), "seeds disagree" (one
    kept seed keeps the edit and another loses it) or "too few seeds" (the seeds agree, but as
    few as these leave the interval across a bar)."""
    if row["n_seeds"] <= 1:
        return "one seed"
    if row["ci_low"] >= KEEP:
        return "keeps"
    if row["ci_high"] <= LOSE:
        return "loses"
    if row["ci_low"] > LOSE and row["ci_high"] < KEEP:
        return "partly"
    values = np.asarray(row["_seed_values"], dtype=float)  # the kept seeds' retentions
    values = values[np.isfinite(values)]
    if values.size and values.max() >= KEEP and values.min() <= LOSE:
        return "seeds disagree"
    return "too few seeds"


def verdict_line(stated: list[dict]) -> str:
    """How many stated retentions keep, lose or partly keep their edit, and why the rest decide nothing."""
    counts = {v: [r for r in stated if verdict(r) == v] for v in
              ("keeps", "loses", "partly", "seeds disagree", "too few seeds", "one seed")}
    line = (f"- Of those that state a retention ({len(stated)}), {len(counts['keeps'])} keep the edit (interval at or "
            f"above {KEEP:g}), {len(counts['loses'])} lose it (at or below {LOSE:g}) and {len(counts['partly'])} keep "
            f"part of it (inside ({LOSE:g}, {KEEP:g}))")
    undecided = len(stated) - len(counts["keeps"]) - len(counts["loses"]) - len(counts["partly"])
    if not undecided:
        return line + "; none is undecided."
    why = []
    if counts["seeds disagree"]:
        names = ", ".join(f"{r['model']}/{r['editor']}/{r['task']}/{r['edit']}/{r['finetuner']}"
                          for r in counts["seeds disagree"])
        why.append(f"{len(counts['seeds disagree'])} because their seeds disagree (one keeps the edit, another "
                   f"loses it: {names})")
    if counts["too few seeds"]:
        n = sorted({r["n_seeds"] for r in counts["too few seeds"]})
        why.append(f"{len(counts['too few seeds'])} whose seeds agree but whose {' or '.join(map(str, n))} seeds "
                   f"leave the interval across {LOSE:g} or {KEEP:g}")
    if counts["one seed"]:
        why.append(f"{len(counts['one seed'])} resting on one fine-tune seed, whose interval says nothing of "
                   "seed-to-seed spread")
    return line + f"; {undecided} are undecided: " + "; ".join(why) + "."


def write_summary(rows: list[dict], validity: pd.DataFrame, scorer: str, samples: int,
                  finetune_quality: pd.DataFrame | None = None, min_ft_fidelity: float = 0.0,
                  min_target_reach: float = 0.0) -> str:
    prim = primary_rows(rows)
    took = [r for r in prim if states_retention(r)]
    by_ft, by_editor = stratified_ranking(rows, "finetuner"), stratified_ranking(rows, "editor")
    prim_ft = by_ft[by_ft["metric"] == by_ft["task"].map(PRIMARY)]
    prim_editor = by_editor[by_editor["metric"] == by_editor["task"].map(PRIMARY)]
    seeds = sorted({r["n_seeds"] for r in prim if r["n_seeds"]})
    text = ["# editpersist summary", "",
            "Retention = (edited_ft - base_ft) / (edited - base) of a metric, per fine-tune seed and averaged over "
            "a cell's seeds; the table's headline metric is each "
            f"task's primary one ({', '.join(f'{t}: {m}' for t, m in PRIMARY.items())}). 1 means the edit fully "
            "survives fine-tuning, 0 that fine-tuning erased it. Intervals (95 %): a t-interval across the "
            f"fine-tune seeds ({' or '.join(map(str, seeds))} per cell) with the variance of a paired bootstrap of "
            f"prompts and images ({samples} replicates) added; with 2 seeds t is 12.7, and the intervals are as "
            f"wide as two seeds leave them (docs/metrics.md). Images scored by the {scorer}. Retention is stated "
            "only where the edit's effect (edited - base) is established: its interval excludes 0, it reaches "
            "`evaluation.min_effect`, and it goes the way the metric calls better. Means and rankings are "
            "stated only within one model, task and metric.", "",
            *left_out_lines(prim, min_ft_fidelity, min_target_reach),
            f"- {len(took)} of {len(prim)} cells state a retention on their primary metric (an established effect "
            "and at least one fine-tune seed kept)."]
    text.append(verdict_line(took))
    text += ["", "## Rankings within each model, task and primary metric", "",
             *stratum_lines(prim_ft, prim_editor, prim),
             "", "## Mean retention by fine-tuner, per stratum (every metric)", "", markdown_table(by_ft), "",
             "## Mean retention by editor, per stratum (every metric)", "", markdown_table(by_editor), "",
             "## Every cell (primary metric)", "", markdown_table(cell_table(prim)), ""]
    text += finetune_quality_lines(finetune_quality, min_ft_fidelity)
    if len(validity):
        text += ["## Judge validity", "",
                 "How often the CLIP judge's decision agrees with the toy world's attribute reader on the same "
                 "images (1.0: the judge could stand in for the ground truth).", "", markdown_table(validity), ""]
    text += ["Full table: `results/persistence.csv` (every metric, with the edit's effect and a note wherever "
             "retention is not stated).", ""]
    return "\n".join(text)
