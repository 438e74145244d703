"""Two editors side by side on one study's tables (the stress study: uce against uce-persist):

    python -m editpersist.evaluation.compare results/stress/persistence.csv uce uce-persist \
        --config config/stress.yaml

Per cell, each editor's retention of the primary metric with its interval, and the paired
difference (second editor minus first) on the same cell: the same base, the same fine-tunes
(fine-tune seed k of both editors starts from the same data and seed, and shares the fine-tuned
base of seed k) and the same noise, seed by seed over the seeds both kept, with its seed-level
interval (metrics.seed_interval.combined_interval, from persistence_by_seed.parquet beside the
table). The second editor is "no worse" where that interval's lower end is above
-`evaluation.compare_margin` (a non-inferiority test at that margin), "worse" where its upper
end is below it, "better" where its lower end is above 0, and undecided otherwise.

Then what each edit does to the edited model itself (specificity, specificity_preserved,
clip_score, kd_judge and, in reader-scored studies, caption_accuracy): each editor's effect
(edited - base) and the paired
difference of the two edited models (base cancels; the same prompts and noise), with its
bootstrap interval, read against the metric's better direction.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..errors import ConfigError, InputError
from ..metrics.bootstrap import percentile_interval
from ..metrics.seed_interval import SeedInterval, combined_interval
from ..metrics.task_metrics import METRICS
from .prompts import PRIMARY
from .summary import with_interval

CELL = ["model", "task", "edit", "finetuner", "ft_data"]
EDITED_METRICS = ("specificity", "specificity_preserved", "clip_score", "kd_judge", "caption_accuracy")
SCHEMA = Path(__file__).resolve().parents[3] / "config/config.schema.yaml"


def configured_margin(config: Path | None) -> float:
    """`evaluation.compare_margin` of a config (one with `extends` read through its base), or the
    schema's default."""
    default = yaml.safe_load(SCHEMA.read_text())["properties"]["evaluation"]["properties"]["compare_margin"]["default"]
    if config is None:
        return float(default)
    if not config.is_file():
        raise ConfigError(f"--config: {config}: no such config file")
    from ..config import read_config

    cfg = read_config(config)
    return float((cfg.get("evaluation") or {}).get("compare_margin", default))


def verdict(diff: SeedInterval, margin: float) -> str:
    """The second editor against the first on one cell's retention (see the module docstring)."""
    if not np.isfinite(diff.low):
        return "no paired seeds"
    if diff.low > 0:
        return "better"
    if diff.low > -margin:
        return "no worse"
    if diff.high < -margin:
        return "worse"
    return "undecided"


def seed_parts(by_seed: pd.DataFrame, coef: float) -> list[tuple]:
    """(coef, seeds, per-seed retentions, per-seed replicates) of one editor's kept seeds."""
    kept = by_seed[by_seed["kept"] & by_seed["retention"].notna()].sort_values("seed")
    if kept.empty:
        return [(coef, (), np.array([]), np.zeros((0, 1)))]
    return [(coef, tuple(kept["seed"]), kept["retention"].to_numpy(dtype=float),
             np.stack([np.asarray(r, dtype=float) for r in kept["replicates"]]))]


def paired_difference(by_seed: pd.DataFrame, cell: dict, metric: str, editors: tuple[str, str]) -> SeedInterval:
    """Retention of editors[1] minus editors[0] on one cell, seed by seed."""
    rows = by_seed[(by_seed[list(cell)] == pd.Series(cell)).all(axis=1) & (by_seed["metric"] == metric)]
    first, second = (rows[rows["editor"] == e] for e in editors)
    return combined_interval(seed_parts(first, -1.0) + seed_parts(second, 1.0))


def retention_side_by_side(table: pd.DataFrame, by_seed: pd.DataFrame, editors: tuple[str, str],
                           margin: float) -> pd.DataFrame:
    """One row per cell: each editor's retention of the primary metric, its interval and seeds
    kept; the paired difference with its interval and verdict; and the target reach of the
    cell's fine-tuned base (shared by both editors: whether the fine-tune left the edit's target
    drawable at all)."""
    primary = table[table["metric"] == table["task"].map(PRIMARY)]
    sides = []
    for editor in editors:
        rows = primary[primary["editor"] == editor].set_index(CELL)
        sides.append(pd.DataFrame({
            f"{editor} retention": [with_interval(*v) for v in rows[["retention", "ci_low", "ci_high"]].to_numpy()],
            f"{editor} seeds": rows["n_seeds"],
        }, index=rows.index))
    out = sides[0].join(sides[1], how="outer")
    diffs, verdicts = [], []
    for key in out.index:
        cell = dict(zip(CELL, key))
        metric = PRIMARY[cell["task"]]
        both = primary[(primary[CELL] == pd.Series(cell)).all(axis=1) & primary["editor"].isin(editors)]
        if both["retention"].notna().sum() < 2:
            diffs.append("")
            verdicts.append("retention not stated for both")
            continue
        diff = paired_difference(by_seed, cell, metric, editors)
        diffs.append(f"{with_interval(diff.value, diff.low, diff.high)} ({diff.n_seeds} seeds)")
        verdicts.append(verdict(diff, margin))
    out[f"{editors[1]} - {editors[0]}"] = diffs
    out[f"verdict (margin {margin:g})"] = verdicts
    reach = primary.groupby(CELL)["target_reach"].min().round(2)
    return out.join(reach).reset_index()


def edited_difference(edited: pd.DataFrame, metric: str, editors: tuple[str, str]) -> tuple[float, float, float]:
    """editors[1]'s edited model minus editors[0]'s on one metric, with the percentile interval of
    the paired replicates (same prompts, same draws)."""
    first, second = (np.asarray(edited.loc[e, "edited_replicates"], dtype=float) for e in editors)
    low, high = percentile_interval(second - first)
    return float(edited.loc[editors[1], "edited"] - edited.loc[editors[0], "edited"]), low, high


def direction(metric: str, low: float, high: float) -> str:
    better_up = METRICS[metric].higher_is_better
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 <= high:
        return "no difference shown"
    return "better" if (low > 0) == better_up else "worse"


def edited_side_by_side(table: pd.DataFrame, by_seed: pd.DataFrame, editors: tuple[str, str]) -> pd.DataFrame:
    """One row per (model, task, metric): each editor's edited-model value and the edit's effect
    with its interval (the same on every fine-tuner's row of an edited state: the first is taken),
    and, with both, the paired difference of the two edited models and its direction."""
    rows = table[table["metric"].isin(EDITED_METRICS)]
    out = []
    for (model, task, metric), group in rows.groupby(["model", "task", "metric"], sort=True):
        record = {"model": model, "task": task, "metric": metric}
        digits = 4 if METRICS[metric].kind == "kid" else 2
        found = {}
        for editor in editors:
            first = group[group["editor"] == editor].head(1)
            if first.empty:
                continue
            r = first.iloc[0]
            record[f"{editor} edited"] = round(float(r["edited"]), digits)
            record[f"{editor} effect"] = with_interval(r["effect"], r["effect_ci_low"], r["effect_ci_high"], digits)
            seeds = by_seed[(by_seed[CELL] == r[CELL]).all(axis=1) & (by_seed["metric"] == metric)
                            & (by_seed["editor"] == editor)]
            if len(seeds):
                found[editor] = {"edited": float(r["edited"]), "edited_replicates": seeds.iloc[0]["edited_replicates"]}
        if len(found) == 2:
            value, low, high = edited_difference(pd.DataFrame(found).T, metric, editors)
            record[f"{editors[1]} - {editors[0]}"] = with_interval(value, low, high, digits)
            record["direction"] = direction(metric, low, high)
        out.append(record)
    return pd.DataFrame(out)


def read_by_seed(table_path: Path) -> pd.DataFrame:
    path = table_path.parent / "persistence_by_seed.parquet"
    if not path.is_file():
        raise InputError(f"{path}: not found (the persistence job writes it beside {table_path.name})")
    return pd.read_parquet(path)


def main(argv: list[str] | None = None, prog: str = "python -m editpersist.evaluation.compare") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("table", type=Path, help="a persistence.csv (persistence_by_seed.parquet beside it)")
    parser.add_argument("editors", nargs=2)
    parser.add_argument("--config", type=Path, default=None,
                        help="the study's config, for evaluation.compare_margin (default: the schema's)")
    parser.add_argument("--margin", type=float, default=None, help="overrides evaluation.compare_margin")
    args = parser.parse_args(argv)
    try:
        table = pd.read_csv(args.table)
        by_seed = read_by_seed(args.table)
        margin = args.margin if args.margin is not None else configured_margin(args.config)
    except (ConfigError, InputError, FileNotFoundError) as e:
        sys.exit(str(e))
    missing = [e for e in args.editors if e not in set(table["editor"])]
    if missing:
        sys.exit(f"{args.table}: no rows of editor {missing[0]!r}")
    editors = tuple(args.editors)
    print(retention_side_by_side(table, by_seed, editors, margin).to_markdown(index=False))
    print()
    print(edited_side_by_side(table, by_seed, editors).to_markdown(index=False))


if __name__ == "__main__":
    main()
