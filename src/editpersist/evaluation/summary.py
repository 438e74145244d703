"""results/summary.md: the headline findings in words, with intervals, stratum by stratum.

A mean retention, and so a ranking of fine-tuners or editors, is stated only within a stratum
(one model, task and metric): averaging UCE over four tasks against ReFACT over two, or
efficacy against CLIP score, would compare unlike things. Only cells whose edit effect is
established (persistence.effect_problem) have a retention to average.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics.bootstrap import dropped, percentile_interval
from .prompts import PRIMARY

STRATUM = ("model", "task", "metric")


def primary_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["metric"] == PRIMARY[r["task"]]]


def established(row: dict) -> bool:
    return bool(np.isfinite(row["retention"]))


def mean_retention(rows: list[dict]) -> dict:
    """Mean retention over cells with an established effect, with the interval of that mean from
    the cells' paired replicates; a replicate in which some cell had no effect is dropped, and
    counted."""
    usable = [r for r in rows if established(r)]
    if not usable:
        return {"mean_retention": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "cells": 0,
                "replicates_dropped": 0}
    reps = np.stack([r["_replicates"] for r in usable])
    with np.errstate(invalid="ignore"):
        mean_reps = np.where(np.isfinite(reps).all(0), reps.mean(0), np.nan)
    low, high = percentile_interval(mean_reps)
    return {"mean_retention": float(np.mean([r["retention"] for r in usable])), "ci_low": low, "ci_high": high,
            "cells": len(usable), "replicates_dropped": dropped(mean_reps)}


def stratified_ranking(rows: list[dict], by: str) -> pd.DataFrame:
    """Mean retention per value of `by` (finetuner or editor) within each stratum, lowest first."""
    out = []
    keys = sorted({tuple(r[k] for k in STRATUM) for r in rows})
    for key in keys:
        stratum = [r for r in rows if tuple(r[k] for k in STRATUM) == key]
        for value in sorted({r[by] for r in stratum}):
            out.append({**dict(zip(STRATUM, key)), by: value, **mean_retention([r for r in stratum if r[by] == value])})
    frame = pd.DataFrame(out, columns=[*STRATUM, by, "mean_retention", "ci_low", "ci_high", "cells",
                                       "replicates_dropped"])
    frame = frame[frame["cells"] > 0]
    return frame.sort_values([*STRATUM, "mean_retention"]).reset_index(drop=True)


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


def ranking_sentence(group: pd.DataFrame, by: str) -> str | None:
    """'dora retains least (...), full most (...)' within one stratum, and whether the two
    intervals are apart; None with fewer than two values to rank."""
    if len(group) < 2:
        return None
    low, high = group.iloc[0], group.iloc[-1]
    if low["ci_high"] < high["ci_low"]:
        return (f"by {by}: {low[by]} retains least ({_interval(low)}, {low['cells']} cells), {high[by]} most "
                f"({_interval(high)}, {high['cells']} cells); the intervals are apart")
    return (f"by {by}: {low[by]} ({_interval(low)}, {low['cells']} cells) to {high[by]} ({_interval(high)}, "
            f"{high['cells']} cells): the intervals overlap, no order is established")


def stratum_lines(by_ft: pd.DataFrame, by_editor: pd.DataFrame) -> list[str]:
    lines = []
    editors = dict(list(by_editor.groupby(list(STRATUM), sort=True)))
    for key, group in by_ft.groupby(list(STRATUM), sort=True):
        parts = [s for s in (ranking_sentence(group, "finetuner"),
                             ranking_sentence(editors.get(key, group.iloc[:0]), "editor")) if s]
        if parts:
            lines.append(f"- **{' / '.join(key)}**: " + "; ".join(parts) + ".")
    return lines or ["- No stratum has two fine-tuners or editors with established effects to rank."]


def finetune_quality_lines(fq: pd.DataFrame, threshold: float) -> list[str]:
    if fq is None or not len(fq):
        return []
    weak = fq[fq["subject_fidelity"] < threshold]
    lines = ["## Did fine-tuning learn its subject?", "",
             f"Share of images of the instance prompt (\"a sks <class>\") that show the subject, over "
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


def learned(row: dict, min_ft_fidelity: float) -> bool:
    """Did the cell's fine-tunes learn their subject? (Unknown fidelity counts as learned.)"""
    return not row["ft_fidelity"] < min_ft_fidelity


def named_cells(rows: list[dict], column: str) -> str:
    """"model/editor/task/edit/finetuner (value)" for each row, the value being its `column`."""
    return ", ".join(f"{r['model']}/{r['editor']}/{r['task']}/{r['edit']}/{r['finetuner']} ({r[column]:.2f})"
                     for r in rows)


def unlearned_lines(prim: list[dict], min_ft_fidelity: float) -> list[str]:
    weak = [r for r in prim if not learned(r, min_ft_fidelity)]
    if not weak:
        return []
    names = named_cells(weak, "ft_fidelity")
    return [f"- {len(weak)} cells are left out of every statement below because a fine-tune of theirs did not learn "
            f"its subject (ft_fidelity, the lower of base_ft's and edited_ft's, under `evaluation.min_ft_fidelity` "
            f"{min_ft_fidelity:g}): {names}."]


def target_kept(row: dict, min_target_reach: float) -> bool:
    """Does the fine-tuned base still draw the edit's target when asked? (Unknown counts as yes.)"""
    return not row["target_reach"] < min_target_reach


def target_erased_lines(prim: list[dict], min_ft_fidelity: float, min_target_reach: float) -> list[str]:
    gone = [r for r in prim if learned(r, min_ft_fidelity) and not target_kept(r, min_target_reach)]
    if not gone:
        return []
    names = named_cells(gone, "target_reach")
    return [f"- {len(gone)} cells are left out of every statement below because their fine-tune erased the edit's "
            "target itself: the fine-tuned unedited model draws it when asked for it in under "
            f"`evaluation.min_target_reach` {min_target_reach:g} of its images (target_reach), so no edit that "
            f"leads to the target could have kept it: {names}."]


def write_summary(rows: list[dict], validity: pd.DataFrame, scorer: str, samples: int,
                  finetune_quality: pd.DataFrame | None = None, min_ft_fidelity: float = 0.0,
                  min_target_reach: float = 0.0) -> str:
    all_prim = primary_rows(rows)
    rows = [r for r in rows if learned(r, min_ft_fidelity) and target_kept(r, min_target_reach)]
    prim = primary_rows(rows)
    took = [r for r in prim if established(r)]
    by_ft, by_editor = stratified_ranking(rows, "finetuner"), stratified_ranking(rows, "editor")
    prim_ft = by_ft[by_ft["metric"] == by_ft["task"].map(PRIMARY)]
    prim_editor = by_editor[by_editor["metric"] == by_editor["task"].map(PRIMARY)]
    seeds = sorted({r["n_seeds"] for r in prim})
    text = ["# editpersist summary", "",
            "Retention = (edited_ft - base_ft) / (edited - base) of a metric; the table's headline metric is each "
            f"task's primary one ({', '.join(f'{t}: {m}' for t, m in PRIMARY.items())}). 1 means the edit fully "
            "survives fine-tuning, 0 that fine-tuning erased it. Intervals: 95 % paired bootstrap over fine-tune "
            f"seeds ({' or '.join(map(str, seeds))} per cell), prompts and images ({samples} replicates); images "
            f"scored by the {scorer}. Retention is stated only where the edit's effect (edited - base) is "
            "established: its interval excludes 0 and it reaches `evaluation.min_effect`. Means and rankings are "
            "stated only within one model, task and metric.", "", *unlearned_lines(all_prim, min_ft_fidelity),
            *target_erased_lines(all_prim, min_ft_fidelity, min_target_reach),
            f"- {len(took)} of {len(prim)} cells have an established effect on their primary metric."]
    persisted = [r for r in took if r["ci_low"] >= 0.8]
    erased = [r for r in took if r["ci_high"] <= 0.2]
    text.append(f"- Of those, {len(persisted)} keep the edit (interval above 0.8) and {len(erased)} lose it "
                "(interval below 0.2); the others are in between or uncertain.")
    text += ["", "## Rankings within each model, task and primary metric", "", *stratum_lines(prim_ft, prim_editor),
             "", "## Mean retention by fine-tuner, per stratum (every metric)", "", markdown_table(by_ft), "",
             "## Mean retention by editor, per stratum (every metric)", "", markdown_table(by_editor), "",
             "## Every cell (primary metric)", "", markdown_table(cell_table(all_prim)), ""]
    text += finetune_quality_lines(finetune_quality, min_ft_fidelity)
    if len(validity):
        text += ["## Judge validity", "",
                 "How often the CLIP judge's decision agrees with the toy world's attribute reader on the same "
                 "images (1.0: the judge could stand in for the ground truth).", "", markdown_table(validity), ""]
    text += ["Full table: `results/persistence.csv` (every metric, with the edit's effect and a note wherever "
             "retention is not stated).", ""]
    return "\n".join(text)
