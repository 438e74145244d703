"""compare.py: two editors on the same cells, paired seed by seed, against a stated margin."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from test_evaluation import APPEARANCE, EDITED, _ft, _scores

from conftest import make_cell
from editpersist.evaluation.compare import (configured_margin, edited_side_by_side, retention_side_by_side,
                                            verdict)
from editpersist.evaluation.persistence import COLUMNS, persistence_rows, table_frame
from editpersist.evaluation.study import by_seed_replicates
from editpersist.metrics.seed_interval import SeedInterval

ROOT = Path(__file__).resolve().parents[1]
REFACT = "edit/refact/appearance/circle-to-blue"


def _study():
    """uce and refact on one cell of two seeds. Seed 1's fine-tune costs both editors the same
    (retention 0.875 -> 0.5 for uce, 1.0 -> 0.625 for refact): refact is ahead by 0.125 on both
    seeds. Their edited models draw the quality captions right in 8 and 14 of 16 images."""
    states = {"base": 0.0, EDITED: 1.0, REFACT: 1.0, _ft("base", 0): 0.0, _ft("base", 1): 0.0,
              _ft(EDITED, 0): 0.875, _ft(EDITED, 1): 0.5, _ft(REFACT, 0): 1.0, _ft(REFACT, 1): 0.625}
    captions = {EDITED: 0.5, REFACT: 0.875}
    scores = _scores(states, samples=1000, caption_rates=captions)
    rows = [r for editor in ("uce", "refact")
            for r in persistence_rows(scores, make_cell("toy-sd", "sd", editor, APPEARANCE, "lora", "s", "unrelated",
                                                   seeds=(0, 1)), min_effect=0.1)]
    by_seed = by_seed_replicates([s for r in rows for s in r["_by_seed"]])
    return rows, table_frame(rows, COLUMNS), by_seed


def test_compare_gives_the_paired_difference_of_two_editors_seed_by_seed():
    """By hand: the per-seed differences are 0.125 and 0.125, so the seeds add no spread and the
    interval is t(1) times the images' part alone: the standard error of the replicates of the
    seed-mean difference. Unpaired (seed 0 of one editor against seed 1 of the other) the
    differences would be 0.5 and -0.25, and the interval many times wider."""
    rows, table, by_seed = _study()
    uce, refact = rows[0], next(r for r in rows if r["editor"] == "refact" and r["metric"] == "efficacy")
    assert list(uce["_seed_values"]) == [0.875, 0.5] and list(refact["_seed_values"]) == [1.0, 0.625]
    within = (refact["_seed_replicates"] - uce["_seed_replicates"]).mean(0)
    lo, hi = np.percentile(within, [2.5, 97.5])
    half = 12.706205 * (hi - lo) / 3.919928
    side = retention_side_by_side(table, by_seed, ("uce", "refact"), margin=0.1).iloc[0]
    expected = f"0.12 [{0.125 - half:.2f}, {0.125 + half:.2f}] (2 seeds)"
    assert side["refact - uce"] == expected
    assert half < 0.5  # the editors' own intervals are each wider than 4
    assert uce["ci_high"] - uce["ci_low"] > 4 and side["uce seeds"] == 2
    assert side["verdict (margin 0.1)"] == verdict(SeedInterval(0.125, 0.125 - half, 0.125 + half, 0, 1, 2), 0.1)


def test_verdicts_read_the_interval_against_the_margin():
    iv = lambda low, high: SeedInterval((low + high) / 2, low, high, 0.0, 1, 2)  # noqa: E731
    assert verdict(iv(0.01, 0.3), 0.1) == "better"
    assert verdict(iv(-0.05, 0.3), 0.1) == "no worse"
    assert verdict(iv(-0.05, 0.3), 0.02) == "undecided"
    assert verdict(iv(-0.5, -0.12), 0.1) == "worse"
    assert verdict(iv(float("nan"), float("nan")), 0.1) == "no paired seeds"


def test_the_edited_models_are_compared_paired_and_in_the_metrics_better_direction():
    """refact's edited model draws its captions right in 14 of 16 images, uce's in 8: refact -
    uce is +0.375, better (higher is better); both keep every negative (no difference shown)."""
    _, table, by_seed = _study()
    edited = edited_side_by_side(table, by_seed, ("uce", "refact")).set_index("metric")
    assert edited.loc["caption_accuracy", "refact - uce"].startswith("0.38 [")
    assert edited.loc["caption_accuracy", "direction"] == "better"
    assert edited.loc["specificity", "direction"] == "no difference shown"


def test_the_margin_comes_from_the_config_or_the_schema(tmp_path):
    assert configured_margin(None) == 0.1
    assert configured_margin(ROOT / "config/config.yaml") == 0.1
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg["evaluation"]["compare_margin"] = 0.05
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert configured_margin(tmp_path / "c.yaml") == 0.05
    with pytest.raises(Exception, match="no such config file"):
        configured_margin(tmp_path / "missing.yaml")
