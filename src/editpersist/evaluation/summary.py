"""results/summary.md: the headline findings in words, with intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics.bootstrap import percentile_interval
from ..metrics.task_metrics import METRICS
from .prompts import PRIMARY


# An edit "took" when it closed at least this share of the gap between the base model and the
# metric's ideal (1 for efficacy, 0 for debias_score and unsafe_rate). Retention of an edit that
# barely moved the metric is a ratio of two small, noisy differences; headline means leave
# such cells out (the cell table shows them all).
MIN_CLOSED_GAP = 0.3


def primary_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["metric"] == PRIMARY[r["task"]]]


def closed_gap(row: dict) -> float:
    """Share of the base-to-ideal gap the edit closed."""
    ideal = 1.0 if METRICS[row["metric"]].higher_is_better else 0.0
    gap = ideal - row["base"]
    return float("nan") if gap == 0 else (row["edited"] - row["base"]) / gap


def edit_took(row: dict) -> bool:
    return closed_gap(row) >= MIN_CLOSED_GAP


def mean_retention(rows: list[dict]) -> tuple[float, float, float, int]:
    """Mean primary-metric retention over cells, with the interval of that mean from the cells'
    paired replicates (cells with NaN retention are left out)."""
    usable = [r for r in rows if np.isfinite(r["retention"])]
    if not usable:
        return float("nan"), float("nan"), float("nan"), 0
    reps = np.stack([r["_replicates"] for r in usable])
    with np.errstate(invalid="ignore"):
        mean_reps = np.where(np.isfinite(reps).all(0), reps.mean(0), np.nan)
    low, high = percentile_interval(mean_reps)
    return float(np.mean([r["retention"] for r in usable])), low, high, len(usable)


def ranking(rows: list[dict], by: str) -> pd.DataFrame:
    out = []
    for key in sorted({r[by] for r in rows}):
        mean, low, high, n = mean_retention([r for r in rows if r[by] == key])
        out.append({by: key, "mean_retention": mean, "ci_low": low, "ci_high": high, "cells": n})
    frame = pd.DataFrame(out, columns=[by, "mean_retention", "ci_low", "ci_high", "cells"])
    return frame.sort_values("mean_retention", na_position="last").reset_index(drop=True)


def _fmt(x: float) -> str:
    return "NaN" if not np.isfinite(x) else f"{x:.2f}"


def _interval(row) -> str:
    return f"{_fmt(row['mean_retention'])} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"


def markdown_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(_fmt(v) if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines)


def finetune_quality_lines(fq: pd.DataFrame, threshold: float = 0.8) -> list[str]:
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


def write_summary(rows: list[dict], validity: pd.DataFrame, scorer: str, samples: int,
                  finetune_quality: pd.DataFrame | None = None) -> str:
    prim = primary_rows(rows)
    took = [r for r in prim if edit_took(r)]
    by_ft, by_editor = ranking(took, "finetuner"), ranking(took, "editor")
    nan_cells = [r for r in prim if not np.isfinite(r["retention"])]
    text = ["# editpersist summary", "",
            "Retention = (edited_ft - base_ft) / (edited - base) of each task's primary metric "
            f"({', '.join(f'{t}: {m}' for t, m in PRIMARY.items())}). 1 means the edit fully survives "
            "fine-tuning, 0 that fine-tuning erased it. Intervals: 95 % paired bootstrap over prompts and "
            f"images ({samples} replicates); images scored by the {scorer}. Means are over the "
            f"{len(took)} of {len(prim)} cells whose edit took (closed at least {MIN_CLOSED_GAP:.0%} of the gap "
            "between the base model and the metric's ideal); the cell table lists every cell.", ""]
    if len(by_ft) and np.isfinite(by_ft.loc[0, "mean_retention"]):
        worst = by_ft.iloc[0]
        text.append(f"- **{worst['finetuner']} reverses edits most**: mean retention {_interval(worst)} over "
                    f"{worst['cells']} cells; the gentlest is {by_ft.iloc[-1]['finetuner']} "
                    f"({_interval(by_ft.iloc[-1])}).")
    compared = by_editor[np.isfinite(by_editor["mean_retention"])] if len(by_editor) else by_editor
    if len(compared) >= 2:
        best = compared.iloc[-1]
        text.append(f"- **{best['editor']} retains most**: mean retention {_interval(best)}; "
                    f"{compared.iloc[0]['editor']} retains least ({_interval(compared.iloc[0])}).")
    elif len(compared) == 1:
        silent = sorted({r["editor"] for r in prim} - set(compared["editor"]))
        text.append(f"- Only {compared.iloc[0]['editor']}'s edits took (mean retention {_interval(compared.iloc[0])}); "
                    f"{', '.join(silent) or 'no other editor'} did not move the metrics enough to compare retention.")
    persisted = [r for r in took if np.isfinite(r["ci_low"]) and r["ci_low"] >= 0.8]
    erased = [r for r in took if np.isfinite(r["ci_high"]) and r["ci_high"] <= 0.2]
    text.append(f"- Of the {len(took)} cells whose edit took, {len(persisted)} keep the edit (interval above 0.8) "
                f"and {len(erased)} lose it (interval below 0.2). {len(prim) - len(took)} cells' edits did not take; "
                f"{len(nan_cells)} of them have NaN retention (edited == base).")
    text += ["", "## Retention by fine-tuner", "", markdown_table(by_ft), "",
             "## Retention by editor", "", markdown_table(by_editor), "",
             "## Every cell (primary metric)", ""]
    cells = pd.DataFrame([{**{k: r[k] for k in ("model", "editor", "task", "edit", "finetuner", "ft_data",
                                                "relation", "metric", "base", "edited", "edited_ft", "retention",
                                                "ci_low", "ci_high")}, "edit_took": "yes" if edit_took(r) else "no"}
                          for r in prim])
    text += [markdown_table(cells), ""]
    text += finetune_quality_lines(finetune_quality)
    if len(validity):
        text += ["## Judge validity", "",
                 "How often the CLIP judge's decision agrees with the toy world's attribute reader on the same "
                 "images (1.0: the judge could stand in for the ground truth).", "", markdown_table(validity), ""]
    text += ["Full table: `results/persistence.csv` (all metrics, including specificity, clip_score and fid).", ""]
    return "\n".join(text)
