"""Seed-level intervals: Student's t, the combination of cells and seeds, and their coverage on
studies drawn from a known process (a small run of `python -m editpersist.bench coverage`)."""

import numpy as np
import pytest

from editpersist.bench.coverage import COUNTS, SCENARIOS, Process, coverage_bench, custom_process
from editpersist.errors import ConfigError
from editpersist.metrics.seed_interval import (combined_interval, jeffreys_share_variance, seed_level_interval,
                                               t_quantile)


def test_t_quantiles_are_the_tabulated_ones():
    # Two-sided 95 % points of Student's t (any statistics table).
    table = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 9: 2.2622, 29: 2.0452}
    for df, value in table.items():
        assert t_quantile(df) == pytest.approx(value, abs=1e-4), df
    assert t_quantile(2, 0.99) == pytest.approx(9.9248, abs=1e-4)
    with pytest.raises(ValueError, match="df must be a positive integer"):
        t_quantile(0)


def test_jeffreys_variance_of_a_share_whose_images_all_hit():
    # 32 of 32: p = 32.5 / 33, by hand p (1 - p) / 32.
    p = 32.5 / 33
    assert jeffreys_share_variance(np.array([32.0]), 32)[0] == pytest.approx(p * (1 - p) / 32)


def test_a_combination_of_cells_pairs_them_seed_by_seed_over_the_seeds_all_have():
    """Editor b's retention minus editor a's on one cell: per seed (0.9 - 0.5, 0.7 - 0.4) over the
    seeds both kept (0 and 2; a left seed 1 out, b has no seed 3). The seed-to-seed spread both
    share (seed 0 higher) cancels; the replicates subtract row by row."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.02, size=(3, 500))
    a = (-1.0, (0, 2, 3), np.array([0.5, 0.4, 0.1]), np.array([0.5, 0.4, 0.1])[:, None] + noise)
    b = (1.0, (0, 1, 2), np.array([0.9, 0.0, 0.7]), np.array([0.9, 0.0, 0.7])[:, None] + noise * 2)
    iv = combined_interval([a, b])
    per_seed = np.array([0.4, 0.3])
    within = ((b[3][[0, 2]] - a[3][[0, 1]]).mean(0))
    lo, hi = np.percentile(within, [2.5, 97.5])
    se = np.sqrt(per_seed.var(ddof=1) / 2 + ((hi - lo) / 3.919928) ** 2)
    assert iv.n_seeds == 2 and iv.value == pytest.approx(0.35)
    assert (iv.low, iv.high) == pytest.approx((0.35 - 12.706205 * se, 0.35 + 12.706205 * se), rel=1e-5)
    assert np.isnan(combined_interval([a, (1.0, (1,), np.array([0.0]), np.zeros((1, 500)))]).value)


def test_seed_level_interval_of_seeds_that_agree_has_the_images_width():
    """Two seeds that agree exactly: the interval is t(1) times the images' standard error alone,
    never zero wide while the images leave any doubt."""
    within = np.linspace(0.9, 1.1, 401)
    iv = seed_level_interval(np.array([1.0, 1.0]), within)
    lo, hi = np.percentile(within, [2.5, 97.5])
    assert iv.high - iv.low == pytest.approx(2 * 12.706205 * (hi - lo) / 3.919928, rel=1e-6)


def test_retention_intervals_cover_the_truth_at_two_and_five_seeds():
    """A small coverage run with a fixed seed: seeds that disagree widely (sd 0.3 around 0.5) and
    a saturated edit nearly kept (0.97; a seed's 32 images often all hit, so two seeds often
    agree exactly). A normal quantile in place of t, an interval without the seeds' own spread,
    or a bootstrap variance without the Jeffreys floor (zero-wide intervals) fails here."""
    names = ("wide_spread", "near_one")
    res = coverage_bench({n: SCENARIOS[n] for n in names}, seeds=(2, 5),
                         counts={"toy": {"efficacy": COUNTS["toy"]["efficacy"]}}, studies=300, samples=200, seed=1)
    cells = {(name, s): res["results"][name]["toy"]["efficacy"][str(s)] for name in names for s in (2, 5)}
    for key, c in cells.items():
        assert c["stated"] == 300 and c["coverage"] >= 0.93, (key, c)
        assert c["zero_width"] == 0, key
    # Five seeds are much surer than two (t(4) = 2.8 against t(1) = 12.7).
    assert cells[("wide_spread", 5)]["median_width"] < 0.3 * cells[("wide_spread", 2)]["median_width"]
    assert res["min_coverage"] == min(c["coverage"] for c in cells.values())


def test_a_custom_process_replaces_the_scenarios_and_bad_fields_are_named():
    assert custom_process(["retention=0.9", "seed_sd=0.05"]) == {"custom": Process(retention=0.9, seed_sd=0.05)}
    with pytest.raises(ConfigError, match="coverage --process 'spread=1'"):
        custom_process(["spread=1"])
    with pytest.raises(ConfigError, match="seed_sd 0.6 is impossible"):
        coverage_bench({"x": Process(retention=0.5, seed_sd=0.6)}, studies=1)
