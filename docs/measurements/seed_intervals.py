"""How much the fine-tune seeds widen the persistence intervals, on a finished toy study.

Run from the repository root after `make run`:
    python docs/measurements/seed_intervals.py
For every cell it recomputes the primary-metric row from the study's own scores twice: with all
of the cell's fine-tune seeds (what results/persistence.csv holds) and with its first seed alone
(what a one-seed study would have printed from the same images), and compares the interval
widths of the cells whose effect is established. It also checks, for every state, that the
KID's bootstrap interval contains its estimate. Writes results/seed_intervals.json.
"""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from editpersist.evaluation.persistence import persistence_rows
from editpersist.evaluation.prompts import PRIMARY
from editpersist.evaluation.study import StudySpec, build_cells, image_counts, load_model_scores
from editpersist.grid import study_cells
from editpersist.metrics.bootstrap import percentile_interval
from editpersist.tasks import load_cases


def main() -> None:
    config = yaml.safe_load(open("config/config.yaml"))
    ev = config["evaluation"]
    cases = load_cases(config["tasks"])
    subjects = {s["name"]: {("cls" if k == "class" else k): v for k, v in s.items()}
                for s in config["finetune_data"]["subjects"]}
    spec = StudySpec(models={m["name"]: m["family"] for m in config["models"]},
                     cells=[c.as_dict() for c in study_cells(config, cases)], subjects=subjects,
                     finetune_steps={}, reedit=(), transfer=(), min_effect=ev["min_effect"])
    scores = {m: load_model_scores(Path(f"results/scores/{m}.parquet"), Path(f"results/scores/{m}.features.npz"),
                                   ev["scorer"], ev["bootstrap"]["samples"], ev["bootstrap"]["seed"], image_counts(ev))
              for m in spec.models}
    widths = {"all_seeds": [], "first_seed": []}
    for cell in build_cells(spec, cases):
        metric = PRIMARY[cell.case.task]
        rows = {label: next(r for r in persistence_rows(scores[cell.model], c, spec.min_effect) if r["metric"] == metric)
                for label, c in (("all_seeds", cell), ("first_seed", replace(cell, seeds=cell.seeds[:1])))}
        if all(np.isfinite(r["retention"]) for r in rows.values()):
            for label, r in rows.items():
                widths[label].append(r["ci_high"] - r["ci_low"])
    n_seeds = sorted({len(c["seeds"]) for c in spec.cells})
    both = np.array([widths["all_seeds"], widths["first_seed"]])
    # Saturated cells (retention 1 in every replicate of both) have width 0 either way.
    moving = both[:, both.max(0) > 0]
    out = {"cells": both.shape[1], "seeds": n_seeds, "cells_with_nonzero_width": moving.shape[1],
           **{f"mean_width_{k}": float(v.mean()) for k, v in zip(widths, moving)},
           "widths_all_seeds_vs_first_seed": [[round(float(a), 3), round(float(b), 3)] for a, b in moving.T],
           "kid_interval_contains_estimate": kid_intervals(scores)}
    Path("results/seed_intervals.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


def kid_intervals(scores) -> dict:
    """For every state: is its KID estimate inside its own bootstrap interval?"""
    inside, states = 0, 0
    for model_scores in scores.values():
        for state in sorted(model_scores.states()):
            if not model_scores.has_role(state, "quality"):
                continue
            est = model_scores.estimate(state, None, "kd_judge")
            low, high = percentile_interval(est.replicates)
            inside += int(low <= est.value <= high)
            states += 1
    return {"states": states, "inside": inside}


if __name__ == "__main__":
    main()
