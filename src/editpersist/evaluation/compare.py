"""Two editors side by side on one study's persistence table (the stress study: uce against
uce-persist), as the README reports them:

    python -m editpersist.evaluation.compare results/stress/persistence.csv uce uce-persist

Retention of the task's primary metric per cell, with its interval; and what each edit does to
the edited model itself (specificity, clip_score, kid and, in reader-scored studies,
caption_accuracy: the edit's effect, edited - base, with its interval), where "as good as the
other editor" is read.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from .prompts import PRIMARY
from .summary import with_interval

CELL = ["model", "task", "edit", "finetuner", "ft_data"]
EDITED_METRICS = ("specificity", "clip_score", "kid", "caption_accuracy")


def retention_side_by_side(table: pd.DataFrame, editors: tuple[str, str]) -> pd.DataFrame:
    """One row per cell: each editor's retention of the primary metric, its interval, and the
    fine-tune's subject fidelity; and the target reach of the cell's fine-tuned base (shared by
    both editors: whether the fine-tune left the edit's target drawable at all)."""
    primary = table[table["metric"] == table["task"].map(PRIMARY)]
    sides = []
    for editor in editors:
        rows = primary[primary["editor"] == editor].set_index(CELL)
        sides.append(pd.DataFrame({
            f"{editor} retention": [with_interval(*v) for v in rows[["retention", "ci_low", "ci_high"]].to_numpy()],
            f"{editor} ft_fidelity": rows["ft_fidelity"].round(2),
        }, index=rows.index))
    reach = primary.groupby(CELL)["target_reach"].first().round(2)
    return sides[0].join(sides[1], how="outer").join(reach).reset_index()


def edited_side_by_side(table: pd.DataFrame, editors: tuple[str, str]) -> pd.DataFrame:
    """One row per (model, task, metric): each editor's edited-model value and the edit's effect
    with its interval (the same on every fine-tuner's row of an edited state: the first is taken)."""
    rows = table[table["metric"].isin(EDITED_METRICS)]
    out = []
    for (model, task, metric), group in rows.groupby(["model", "task", "metric"], sort=True):
        record = {"model": model, "task": task, "metric": metric}
        digits = 4 if metric == "kid" else 2
        for editor in editors:
            first = group[group["editor"] == editor].head(1)
            if first.empty:
                continue
            r = first.iloc[0]
            record[f"{editor} edited"] = round(float(r["edited"]), digits)
            record[f"{editor} effect"] = with_interval(r["effect"], r["effect_ci_low"], r["effect_ci_high"], digits)
        out.append(record)
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m editpersist.evaluation.compare", description=__doc__.split("\n")[0])
    parser.add_argument("table", help="a persistence.csv")
    parser.add_argument("editors", nargs=2)
    args = parser.parse_args(argv)
    table = pd.read_csv(args.table)
    missing = [e for e in args.editors if e not in set(table["editor"])]
    if missing:
        sys.exit(f"{args.table}: no rows of editor {missing[0]!r}")
    editors = tuple(args.editors)
    print(retention_side_by_side(table, editors).to_markdown(index=False))
    print()
    print(edited_side_by_side(table, editors).to_markdown(index=False))


if __name__ == "__main__":
    main()
