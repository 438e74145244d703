"""Evaluation: state names, generation manifests, scoring, bootstrap, metrics and the table."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_cell
from editpersist.errors import InputError
from editpersist.evaluation.generation import state_prompts
from editpersist.evaluation.persistence import COLUMNS, ModelScores, persistence_rows, ratio_row, table_frame
from editpersist.evaluation.prompts import QualityConfig, case_key, case_probes
from editpersist.evaluation.scoring import probe_hits
from editpersist.evaluation.weights import update_alignment
from editpersist.metrics.bootstrap import draw_indices, percentile_interval, resample_each_seed, retention
from editpersist.metrics.fid import FrechetReference
from editpersist.metrics.task_metrics import debias_gap, fit_references, sampling_debias_gap
from editpersist.states import BASE, GROUP, STATE, State, layer_target
from editpersist.tasks.cases import Probe
from editpersist.tasks.toy import toy_cases

APPEARANCE = toy_cases()["appearance"][0]
DEBIAS = toy_cases()["debias"][0]
EDITED = "edit/uce/appearance/circle-to-blue"


def test_state_names_parse_into_kinds_and_layers():
    cases = {
        "base": ("base", []),
        EDITED: ("edited", [f"{EDITED}.safetensors"]),
        "base/ft/lora/sks-square/seed0": ("base_ft", ["base/ft/lora/sks-square/seed0"]),
        f"{EDITED}/ft/dora/sks-square/seed1": ("edited_ft", [f"{EDITED}.safetensors",
                                                             f"{EDITED}/ft/dora/sks-square/seed1"]),
        f"{EDITED}/ft/dora/sks-square/seed1/reedit": (
            "reedited", [f"{EDITED}.safetensors", f"{EDITED}/ft/dora/sks-square/seed1",
                         "reedit/uce/appearance/circle-to-blue/dora/sks-square/seed1.safetensors"]),
        # The adapter of the base's fine-tune of the same seed.
        f"{EDITED}/transfer/lora/sks-square/seed2": ("transfer", [f"{EDITED}.safetensors",
                                                                   "base/ft/lora/sks-square/seed2"]),
    }
    for name, (kind, layers) in cases.items():
        assert State.parse(name).kind == kind, name
        assert State.parse(name).layers() == layers, name
        assert State.parse(name).name == name
    # The workflow outputs holding them: one directory per fine-tune (and per fine-tune's
    # re-edits) for all its seeds, one file per edit.
    layers = State.parse(f"{EDITED}/ft/dora/sks-square/seed1/reedit").layers()
    assert [layer_target(layer) for layer in layers] == [
        f"{EDITED}.safetensors", f"{EDITED}/ft/dora/sks-square", "reedit/uce/appearance/circle-to-blue/dora/sks-square"]
    assert layer_target(f"results/states/toy-sd/{layers[2]}") == f"results/states/toy-sd/{layer_target(layers[2])}"
    assert State.parse(f"{EDITED}/ft/dora/sks-square/seed12").parts == {
        "editor": "uce", "task": "appearance", "edit": "circle-to-blue", "finetuner": "dora", "subject": "sks-square",
        "seed": "12"}


@pytest.mark.parametrize("bad", ["", "edited", "base/reedit", "edit/uce/appearance", "base/ft/lora", "../base",
                                 "base/ft/lora/sks-square", "base/ft/lora/sks-square/seed", "base/ft/lora/s/seedx"])
def test_malformed_state_names_are_rejected(bad):
    with pytest.raises(InputError, match="not a model state name"):
        State.parse(bad)


def test_states_built_by_name_are_the_states_parsed_and_groups_hold_their_seeds():
    """Every way of building a state gives the name the grammar (STATE, GROUP) accepts, and
    parsing it gives the same state back; a group's members are its seeds' states."""
    edited = State.edited("uce", "appearance", "circle-to-blue")
    built = {
        BASE: "base", edited: EDITED,
        BASE.finetuned("lora", "sks-square", 3): "base/ft/lora/sks-square/seed3",
        edited.finetuned("dora", "sks-square", 0).reedited(): f"{EDITED}/ft/dora/sks-square/seed0/reedit",
        edited.transferred("lora", "sks-square", 2): f"{EDITED}/transfer/lora/sks-square/seed2",
    }
    for state, name in built.items():
        assert state.name == name and re.fullmatch(STATE, name) and State.parse(name) == state
    group = edited.finetuned("dora", "sks-square").reedited()
    assert group.name == f"{EDITED}/ft/dora/sks-square/reedit" and re.fullmatch(GROUP, group.name)
    assert State.parse_group(group.name) == group
    with pytest.raises(InputError, match="a group of seeds is no one state"):
        group.layers()
    assert [s.name for s in group.members([0, 4])] == [f"{EDITED}/ft/dora/sks-square/seed{k}/reedit" for k in (0, 4)]
    assert BASE.members([0, 1]) == [BASE] and edited.members([0, 1]) == [edited]
    assert edited.path("states") == Path(f"states/{EDITED}.safetensors")
    assert BASE.finetuned("lora", "s", 1).path("states") == Path("states/base/ft/lora/s/seed1")
    # States the grammar has no name for cannot be made.
    for bad in (dict(reedit=True), dict(finetuner="lora", subject="s", transfer=True),
                dict(editor="uce", task="role"), dict(seed=1),
                dict(editor="uce", task="role", edit="e", finetuner="lora", subject="s", reedit=True, transfer=True)):
        with pytest.raises(InputError):
            State(**bad)
    with pytest.raises(InputError, match="not a model state group"):
        State.parse_group("base/ft/lora/s/seed1")


def test_retention_is_nan_when_the_edit_changed_nothing():
    assert retention(0.0, 1.0, 0.1, 0.6) == pytest.approx(0.5)
    assert np.isnan(retention(0.3, 0.3, 0.2, 0.5))
    r = retention(np.zeros(3), np.array([1.0, 0.0, 0.5]), np.zeros(3), np.array([0.5, 0.5, 0.5]))
    assert r[0] == 0.5 and np.isnan(r[1]) and r[2] == 1.0


def test_bootstrap_draws_depend_only_on_shape_and_seed_and_every_seed_is_resampled_from_its_own_grid():
    a, b = draw_indices((3, 5), 50, seed=1), draw_indices((3, 5), 50, seed=1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == (50, 3) and a[1].shape == (50, 3, 5)
    assert not np.array_equal(a[1], draw_indices((3, 5), 50, seed=2)[1])
    # Three fine-tune seeds, each grid value naming its seed, prompt and image (100 s + 5 p + i):
    # replicate b of seed s holds seed s's own values at the drawn prompts and images, the same
    # draws for every seed (the pairing between states and seeds).
    stack = 100 * np.arange(3)[:, None, None] + np.arange(15.0).reshape(3, 5)[None]
    reps = resample_each_seed(stack, *a)
    assert reps.shape == (3, 50, 3, 5)
    rows, cols = a
    for s in range(3):
        np.testing.assert_array_equal(reps[s], 100 * s + 5 * rows[:, :, None] + cols)


def test_percentile_interval_ignores_non_finite_replicates():
    values = np.concatenate([np.linspace(0, 1, 101), [np.nan, np.inf]])
    lo, hi = percentile_interval(values)
    assert lo == pytest.approx(0.025) and hi == pytest.approx(0.975)
    assert all(np.isnan(percentile_interval(np.array([np.nan]))))


def test_frechet_distance_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    other = rng.normal(loc=0.5, size=(300, 6)) @ rng.normal(size=(6, 6))
    fit = FrechetReference.fit(ref)
    assert abs(fit.distance(ref)) < 1e-8
    m1, m2 = other.mean(0), ref.mean(0)
    c1, c2 = np.cov(other, rowvar=False), np.cov(ref, rowvar=False)
    eig = np.linalg.eigvals(c1 @ c2)  # tr sqrt(C1 C2) = sum of sqrt of its (real, >= 0) eigenvalues
    textbook = ((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.sqrt(np.abs(eig.real)).sum()
    assert fit.distance(other) == pytest.approx(textbook, rel=1e-8)


def test_debias_gap_is_the_mean_absolute_gap_to_the_desired_ratio_among_attribute_images():
    # prompt 1: 3 vs 1 -> shares 3/4, 1/4; prompt 2: 1 vs 2 and one image with neither -> 1/3, 2/3
    # (the image with neither attribute is no evidence either way, as for the debias editor).
    attrs = np.array([[0, 0, 0, 1], [0, 1, 1, -1], [-1, -1, -1, -1]])
    gap = debias_gap(attrs, np.array([0.5, 0.5]))
    assert gap == pytest.approx(np.mean([0.25, 1 / 6, 0.5]))  # no attribute at all: shares 0, gap 0.5


def test_sampling_debias_gap_is_what_an_exactly_balanced_model_scores():
    # Two attributes, 10 images: sum_k C(10,k) |k/10 - 1/2| / 2^10 = 126/1024 (by hand).
    assert sampling_debias_gap(10, np.array([0.5, 0.5])) == pytest.approx(126 / 1024)
    # Three attributes: the metric itself on simulated images of an exactly balanced model.
    desired = np.array([0.2, 0.3, 0.5])
    draws = np.random.default_rng(0).choice(3, size=(40000, 1, 12), p=desired)
    assert sampling_debias_gap(12, desired) == pytest.approx(debias_gap(draws, desired).mean(), abs=0.002)
    # Many images (C(n, k) is past a float here): the normal limit, E|Z| sigma = sqrt(2/pi) sqrt(pq/n).
    assert sampling_debias_gap(4000, np.array([0.5, 0.5])) == pytest.approx(np.sqrt(2 / np.pi) * 0.5 / np.sqrt(4000),
                                                                            rel=1e-3)


def _debias_scores(n: int, counts: dict[str, int] | None, patterns: dict[str, tuple[int, ...]] | None = None):
    """Synthetic scores of the toy debias case: in each state, every prompt's n images show the
    attributes of its pattern in turn (-1: neither); by default the base, exactly balanced."""
    rows = [{"state": state, "step": -1, "case": case_key(DEBIAS), "task": "debias", "role": role,
             "prompt": probe.prompt, "index": i, "reader_hit": np.nan, "judge_hit": np.nan,
             "reader_attr": pattern[i % len(pattern)], "judge_attr": -1, "clip_score": np.nan, "feature": -1}
            for state, pattern in (patterns or {"base": (0, 1)}).items()
            for role, probe in case_probes(DEBIAS) for i in range(n)]
    return ModelScores(pd.DataFrame(rows), np.zeros((1, 4)), {}, "reader", 50, 0, counts)


def test_every_phrasing_a_debias_edit_balances_is_generated_and_scored_with_the_source_count():
    appearance, debias = toy_cases()["appearance"][0], DEBIAS
    assert {r.source for r in debias.requests} == {p.prompt for _, p in case_probes(debias)}
    counts = state_prompts([appearance, debias], QualityConfig(max_captions=0), 10, 32)
    assert {p.prompt: counts[p.prompt] for _, p in case_probes(debias)} == {p.prompt: 32 for _, p in case_probes(debias)}
    assert counts[appearance.source.prompt] == 32 and {counts[p.prompt] for p in appearance.positives} == {10}
    # The score reads all 32 of each phrasing, and knows what sampling alone would score there.
    scores = _debias_scores(32, {"source": 32, "positive": 10, "negative": 10, "snapshot": 10})
    assert scores.grid("base", debias, "debias_score").shape == (len(debias.positives) + 1, 32)
    est = scores.estimate("base", debias, "debias_score")
    assert est.value == 0.0 and est.coverage == 1.0 and est.floor == pytest.approx(sampling_debias_gap(32, [0.5, 0.5]))


def test_a_debias_row_says_how_many_images_its_shares_rest_on():
    edited = "edit/uce/debias/triangle-balance"
    scores = _debias_scores(8, None, {"base": (0,), edited: (0, 1, -1, -1), _ft("base"): (0,),
                                      _ft(edited): (0, -1, -1, -1)})
    cell = make_cell("toy-flux", "flux", "uce", DEBIAS, "lora", "s", "unrelated")
    row = ratio_row(scores, cell, "debias_score", cell.grid.edited_fts)
    # Balanced among the 2 of 4 images that show a colour; all yellow among 1 of 4. Sampling
    # alone, by hand: 4 of 8 images a prompt, sum_k C(4,k) |k/4 - 1/2| / 16 = 3/16; 2 of 8: 1/4.
    assert (row.base, row.edited, row.value) == (0.5, 0.0, 0.5)
    assert ("shares are among the images that show an attribute: 0.50 of the edited model's, 0.25 of this state's; "
            "balanced among those, sampling alone would score 0.188 and 0.250") in row.note


def test_update_alignment_measures_how_much_of_the_edit_was_undone():
    e = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    undone = update_alignment(e, -e)
    assert undone["cosine"] == pytest.approx(-1.0) and undone["share_removed"] == pytest.approx(1.0)
    half = update_alignment(e, -0.5 * e + torch.tensor([[2.0, -1.0], [0.0, 0.0]]))  # orthogonal extra
    assert half["share_removed"] == pytest.approx(0.5)
    untouched = update_alignment(e, torch.zeros_like(e))
    assert np.isnan(untouched["cosine"]) and untouched["share_removed"] == 0.0


def _scores(hit_rates: dict[str, float], n: int = 64, samples: int = 400, counts=None, dim: int = 4,
            target_rates: dict[str, float] | None = None, caption_rates: dict[str, float] | None = None,
            scorer: str = "reader", feature_shift: dict[str, float] | None = None) -> ModelScores:
    """Synthetic scores of one appearance case: exact hit rates per state, plus quality rows;
    with `target_rates`, images of the edit's target prompt drawn right at those rates; with
    `caption_rates`, quality images that show their caption at those rates (else all do); with
    `feature_shift`, those states' quality features moved by that much in every dimension."""
    rows, feats = [], []
    rng = np.random.default_rng(0)
    for state, rate in hit_rates.items():
        target = [("target", APPEARANCE.target)] if target_rates is not None else []
        for role, probe in [("source", APPEARANCE.source), *[("positive", p) for p in APPEARANCE.positives],
                            *[("negative", p) for p in APPEARANCE.negatives],
                            *[("preserved", p) for p in APPEARANCE.preserved], *target]:
            k = {"negative": n, "preserved": n,
                 "target": round((target_rates or {}).get(state, 1.0) * n)}.get(role, round(rate * n))
            hits = np.r_[np.ones(k), np.zeros(n - k)]
            for i in range(n):
                rows.append({"state": state, "step": -1, "case": case_key(APPEARANCE), "task": "appearance",
                             "role": role, "prompt": probe.prompt, "index": i, "reader_hit": hits[i],
                             "judge_hit": hits[i], "reader_attr": -1, "judge_attr": -1, "clip_score": np.nan,
                             "feature": -1})
        shown = round((caption_rates or {}).get(state, 1.0) * 8)
        for c in range(2):
            for i in range(8):
                rows.append({"state": state, "step": -1, "case": "", "task": "quality", "role": "quality",
                             "prompt": f"caption {c}", "index": i, "reader_hit": float(i < shown),
                             "judge_hit": np.nan,
                             "reader_attr": -1, "judge_attr": -1, "clip_score": 20.0 + rate,
                             "feature": len(feats)})
                feats.append(rng.normal(size=dim) + (feature_shift or {}).get(state, 0.0))
    return ModelScores(pd.DataFrame(rows), np.array(feats), fit_references(rng.normal(size=(64, dim))),
                       scorer, samples, 0, counts)


def _ft(start: str, seed: int = 0) -> str:
    return State.parse(start).finetuned("lora", "s", seed).name


ONE_SEED = "one fine-tune seed: the interval is of images and prompts only"


def test_persistence_rows_use_the_base_ft_control_and_give_the_effect():
    """base_ft differs from base, so a row that swapped the control for the base (0.75) or the
    edited state for edited_ft would not give the hand-computed 0.5."""
    states = {"base": 0.125, EDITED: 0.9375, _ft("base"): 0.3125, _ft(EDITED): 0.71875}
    cell = make_cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s", "unrelated")
    rows = persistence_rows(_scores(states), cell, min_effect=0.1)
    assert [r["metric"] for r in rows] == ["efficacy", "generality", "specificity", "specificity_preserved",
                                           "clip_score", "fd_judge", "kd_judge", "caption_accuracy"]
    eff = rows[0]
    assert (eff["base"], eff["edited"], eff["base_ft"], eff["edited_ft"]) == (0.125, 0.9375, 0.3125, 0.71875)
    assert eff["retention"] == pytest.approx((0.71875 - 0.3125) / (0.9375 - 0.125))
    assert eff["ci_low"] < eff["retention"] < eff["ci_high"] and eff["ci_high"] - eff["ci_low"] < 0.4
    assert eff["effect"] == pytest.approx(0.8125) and 0.6 < eff["effect_ci_low"] < 0.8125 < eff["effect_ci_high"]
    assert eff["n_seeds"] == 1 and eff["replicates_dropped"] == 0 and eff["note"] == ONE_SEED
    assert eff["n_images"] == 64 and rows[1]["n_images"] == 4 * 64
    # Negatives keep the original in every state: the edit did not move specificity.
    assert np.isnan(rows[2]["retention"]) and rows[2]["effect"] == 0 and "includes 0" in rows[2]["note"]
    frame = table_frame(rows, COLUMNS)
    assert list(frame.columns[:17]) == ["model", "family", "editor", "task", "edit", "finetuner", "ft_data",
                                        "relation", "metric", "base", "edited", "base_ft", "edited_ft", "retention",
                                        "ci_low", "ci_high", "n_images"]
    assert list(frame.columns[17:]) == ["effect", "effect_ci_low", "effect_ci_high", "n_seeds",
                                        "replicates_dropped", "note", "ft_fidelity", "target_reach"]
    assert np.isnan(eff["ft_fidelity"])  # these synthetic states have no subject images
    assert np.isnan(eff["target_reach"])  # nor images of the target prompt


def test_caption_accuracy_is_the_readers_share_of_quality_images_that_show_their_caption():
    """The edited model draws its captions right in 8 of 16 quality images, the fine-tuned base
    in 14, the fine-tuned edit in 4: the row reads those shares (not clip_score) and the edit's
    effect is -0.5. That is damage (higher is better): (0.25 - 0.875) / (0.5 - 1) = 1.25 would read
    as an edit kept, so no retention is stated. A study scored by the judge has no such row: the
    judge has no reading of its own for it."""
    states = {"base": 0.125, EDITED: 0.9375, _ft("base"): 0.3125, _ft(EDITED): 0.71875}
    captions = {"base": 1.0, EDITED: 0.5, _ft("base"): 0.875, _ft(EDITED): 0.25}
    cell = make_cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s", "unrelated")
    rows = {r["metric"]: r for r in persistence_rows(_scores(states, caption_rates=captions), cell, min_effect=0.1)}
    r = rows["caption_accuracy"]
    assert (r["base"], r["edited"], r["base_ft"], r["edited_ft"]) == (1.0, 0.5, 0.875, 0.25)
    assert r["effect"] == pytest.approx(-0.5) and r["effect_ci_high"] < 0
    assert np.isnan(r["retention"]) and np.isnan(r["ci_low"])
    assert "the edit moved caption_accuracy the wrong way (-0.5; higher is better)" in r["note"]
    judged = persistence_rows(_scores(states, caption_rates=captions, scorer="judge"), cell, min_effect=0.1)
    assert [r["metric"] for r in judged] == ["efficacy", "generality", "specificity", "specificity_preserved",
                                             "clip_score", "fd_judge", "kd_judge"]


def test_target_reach_is_the_fine_tuned_bases_share_of_its_target():
    """base_ft's seeds draw "a blue circle" blue in 48 and 16 of 64 images: each seed's
    target_reach is its own share (0.75, 0.25), the row's the lowest of its seeds', whatever the
    base, the edited states or the source prompt show."""
    states = {"base": 0.0, EDITED: 1.0, _ft("base", 0): 0.0, _ft("base", 1): 0.0, _ft(EDITED, 0): 0.0,
              _ft(EDITED, 1): 0.0}
    targets = {"base": 1.0, EDITED: 1.0, _ft("base", 0): 0.75, _ft("base", 1): 0.25, _ft(EDITED, 0): 1.0,
               _ft(EDITED, 1): 1.0}
    cell = make_cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s", "unrelated", seeds=(0, 1))
    rows = persistence_rows(_scores(states, target_rates=targets), cell, min_effect=0.1)
    assert {r["target_reach"] for r in rows} == {0.25}
    assert [s["target_reach"] for s in rows[0]["_by_seed"]] == [0.75, 0.25]
    assert rows[0]["retention"] == 0.0  # the target rows are no efficacy images


def test_retention_of_an_edit_that_barely_moved_is_not_stated():
    """3 of 64 images: retention would be a ratio of noise (0.67 in [0, 1]); the row gives the
    effect with its interval and says why retention is empty."""
    cell = make_cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s", "unrelated")
    states = {"base": 0.0, EDITED: 3 / 64, _ft("base"): 0.0, _ft(EDITED): 2 / 64}
    row = persistence_rows(_scores(states), cell, min_effect=0.1)[0]
    assert row["effect"] == pytest.approx(3 / 64) and np.isnan(row["retention"]) and np.isnan(row["ci_low"])
    assert "includes 0" in row["note"] or "< min_effect" in row["note"]
    # A clear but small effect (10 of 64 images, interval away from 0) is held to min_effect.
    states = {"base": 0.0, EDITED: 10 / 64, _ft("base"): 0.0, _ft(EDITED): 5 / 64}
    row = persistence_rows(_scores(states), cell, min_effect=0.2)[0]
    assert row["effect_ci_low"] > 0 and np.isnan(row["retention"]) and "< min_effect 0.2" in row["note"]
    row = persistence_rows(_scores(states), cell, min_effect={"efficacy": 0.1})[0]
    assert row["retention"] == pytest.approx(0.5) and row["note"] == ONE_SEED


def test_the_seed_level_interval_is_a_t_interval_across_seeds_with_the_image_variance_added():
    """Every image of a state alike: seed 0 keeps the edit (1.0), seed 1 erases it (0.0). The
    retention is their mean, 0.5; the interval 0.5 +- t(1) se with se^2 = s^2 / 2 + V_within,
    s^2 = 0.5 (by hand), and V_within what the Jeffreys floor gives states whose 64 images all
    agree (a few 1e-4): about +-6.4, where resampling the two seeds gave [0, 1] and one seed
    alone [1, 1]."""
    from editpersist.metrics.seed_interval import robust_variance

    states = {"base": 0.0, EDITED: 1.0, _ft("base", 0): 0.0, _ft("base", 1): 0.0, _ft(EDITED, 0): 1.0,
              _ft(EDITED, 1): 0.0}
    scores = _scores(states, samples=2000)
    two = make_cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s", "unrelated", seeds=(0, 1))
    row = persistence_rows(scores, two)[0]
    within = robust_variance(row["_seed_replicates"].mean(0))
    assert 1e-5 < within < 1e-3
    half = 12.706204736 * np.sqrt(0.5 / 2 + within)
    assert row["n_seeds"] == 2 and row["retention"] == 0.5 and list(row["_seed_values"]) == [1.0, 0.0]
    assert row["ci_low"] == pytest.approx(0.5 - half) and row["ci_high"] == pytest.approx(0.5 + half)
    assert [(s["seed"], s["retention"], s["kept"]) for s in row["_by_seed"]] == [(0, 1.0, True), (1, 0.0, True)]
    one = persistence_rows(scores, make_cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s", "unrelated"))[0]
    # One seed: the normal interval of the images alone, never zero wide, and it says so.
    assert one["n_seeds"] == 1 and one["retention"] == 1.0 and one["note"] == ONE_SEED
    assert one["ci_low"] == pytest.approx(1 - 1.959964 * np.sqrt(robust_variance(one["_seed_replicates"][0])))
    assert 0.9 < one["ci_low"] < 1.0 < one["ci_high"]
    # Pairing: base_ft of seed k is only ever compared with edited_ft of seed k. Both seeds'
    # differences are 0, so both retentions are 0 and only the images' variance is left; pairing
    # seed 0's base_ft with seed 1's edited_ft would give retentions of 1 and -1.
    states = {"base": 0.0, EDITED: 1.0, _ft("base", 0): 0.0, _ft("base", 1): 1.0, _ft(EDITED, 0): 0.0,
              _ft(EDITED, 1): 1.0}
    paired = persistence_rows(_scores(states), two)[0]
    assert list(paired["_seed_values"]) == [0.0, 0.0]
    assert paired["retention"] == 0.0 and -0.3 < paired["ci_low"] < 0 < paired["ci_high"] < 0.3


def test_kid_effect_replicates_pair_the_states_draws_and_fid_is_a_point_estimate():
    """The edited model's quality features move 1.5 away from the reference in every dimension:
    its KID rises, a positive effect with an interval above 0 (and, lower being better, damage,
    not a retention). Each effect replicate is, by hand, the KID of the edited model's images at
    one replicate's draws minus the base's at the very same draws."""
    from editpersist.metrics.kid import KernelReference

    cell = make_cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s", "unrelated")
    states = {"base": 0.0, EDITED: 0.9375, _ft("base"): 0.0, _ft(EDITED): 0.5}
    scores = _scores(states, samples=300, feature_shift={EDITED: 1.5, _ft(EDITED): 1.5})
    rows = {r["metric"]: r for r in persistence_rows(scores, cell)}
    kid = rows["kd_judge"]
    rows_idx, cols = draw_indices((2, 8), 300, 0)
    ref = scores.references["kid"]
    by_hand = {}
    for state in ("base", EDITED):
        grid = scores.grid(state, None, "kd_judge")  # feature rows, captions x images
        by_hand[state] = ref.distance_of_draws(scores.features, grid[rows_idx[:, :, None], cols].reshape(300, -1))
    np.testing.assert_allclose(kid["_effect_replicates"], by_hand[EDITED] - by_hand["base"], rtol=1e-10)
    assert kid["effect"] > 0 and kid["effect_ci_low"] > 0
    assert isinstance(ref, KernelReference) and np.isnan(kid["retention"]) and "the wrong way" in kid["note"]
    assert np.isnan(rows["fd_judge"]["retention"]) and np.isnan(rows["fd_judge"]["effect_ci_low"])
    assert rows["fd_judge"]["note"] == "fd_judge has no interval (a point estimate on all images; see kd_judge)"
    # 16 images per state of 12-d features: FID's covariance is poorly estimated, and it says so.
    rows = {r["metric"]: r for r in persistence_rows(_scores(states, dim=12), cell)}
    assert "fd_judge from 16 images < 2 x 12 feature dims: biased upward" in rows["fd_judge"]["note"]


def test_a_distance_compares_every_state_on_the_same_image_count():
    """Two fine-tune seeds of 16 quality images each: fd_judge, biased by the image count, is the
    mean of each seed's distance on its own 16 images (the base's count), by hand, not the
    distance of the 32 pooled; n_images says 16."""
    cell = make_cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s", "unrelated", seeds=(0, 1))
    states = {"base": 0.0, EDITED: 1.0, _ft("base", 0): 0.0, _ft("base", 1): 0.0, _ft(EDITED, 0): 0.5,
              _ft(EDITED, 1): 0.5}
    scores = _scores(states, dim=3, feature_shift={_ft(EDITED, 1): 1.0})
    row = next(r for r in persistence_rows(scores, cell) if r["metric"] == "fd_judge")
    ref = scores.references["fid"]
    per_seed = [ref.distance(scores.features[scores.grid(_ft(EDITED, k), None, "fd_judge").ravel()]) for k in (0, 1)]
    pooled = ref.distance(scores.features[np.concatenate([scores.grid(_ft(EDITED, k), None, "fd_judge").ravel()
                                                          for k in (0, 1)])])
    assert row["edited_ft"] == pytest.approx(np.mean(per_seed)) and abs(row["edited_ft"] - pooled) > 0.05
    assert row["n_images"] == 16 and row["base"] == pytest.approx(
        ref.distance(scores.features[scores.grid("base", None, "fd_judge").ravel()]))


def test_curves_keep_a_snapshot_step_one_state_lacks_as_a_noted_gap():
    from editpersist.evaluation.persistence import curve_rows

    states = {"base": 0.0, EDITED: 1.0, _ft("base"): 0.0, _ft(EDITED): 0.5}
    scores = _scores(states)
    source = scores.table[(scores.table["role"] == "source") & scores.table["state"].isin([_ft("base"), _ft(EDITED)])]
    snaps = [source.assign(step=50)]
    snaps.append(source[source["state"] == _ft("base")].assign(step=100))  # edited_ft has no step 100
    scores.table = pd.concat([scores.table, *snaps], ignore_index=True)
    scores.__post_init__()
    cell = make_cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s", "unrelated")
    rows = curve_rows(scores, cell, total_steps=200)
    assert [r["step"] for r in rows] == [0, 50, 100, 200]
    assert rows[0]["retention"] == 1.0 and rows[1]["retention"] == pytest.approx(0.5)
    assert np.isnan(rows[2]["retention"]) and rows[2]["note"] == f"no snapshot in {_ft(EDITED)}"
    assert rows[3]["retention"] == pytest.approx(0.5)


def test_curves_pair_the_seeds_that_have_snapshots_end_point_included():
    """Fine-tunes keep snapshots on their first seed only: the curve reads seed 0's pair at every
    point. Seed 1 lost the edit, so a curve whose end pooled both seeds would end at 0.5."""
    from editpersist.evaluation.persistence import curve_rows

    states = {"base": 0.0, EDITED: 1.0, _ft("base", 0): 0.0, _ft("base", 1): 0.0, _ft(EDITED, 0): 1.0,
              _ft(EDITED, 1): 0.0}
    scores = _scores(states)
    seed0 = scores.table[(scores.table["role"] == "source")
                         & scores.table["state"].isin([_ft("base", 0), _ft(EDITED, 0)])]
    half = seed0.assign(step=50, reader_hit=np.where(seed0["state"] == _ft(EDITED, 0), seed0["index"] % 2, 0.0))
    scores.table = pd.concat([scores.table, half], ignore_index=True)
    scores.__post_init__()
    cell = make_cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s", "unrelated", seeds=(0, 1))
    rows = curve_rows(scores, cell, total_steps=200)
    assert [(r["step"], r["n_seeds"]) for r in rows] == [(0, 1), (50, 1), (200, 1)]
    assert rows[1]["retention"] == pytest.approx(0.5) and rows[2]["retention"] == 1.0
    # The table's own row pools both seeds.
    assert persistence_rows(scores, cell)[0]["retention"] == pytest.approx(0.5)


def test_a_prompt_with_too_few_images_is_refused_and_extra_images_are_not_read():
    states = {"base": 0.5}
    full = _scores(states, counts={"source": 64, "positive": 16, "negative": 16, "quality": 8, "snapshot": 16})
    # A positive prompt also used elsewhere with 64 images: its metric reads its own first 16.
    assert full.grid("base", APPEARANCE, "generality").shape == (len(APPEARANCE.positives), 16)
    short = _scores(states)
    short.table = short.table.drop(short.table.index[(short.table["prompt"] == APPEARANCE.positives[0].prompt)
                                                      & (short.table["index"] == 63)])
    short.__post_init__()
    with pytest.raises(InputError, match=f"prompt {APPEARANCE.positives[0].prompt!r} has 63 images"):
        short.grid("base", APPEARANCE, "generality")


def test_missing_state_scores_name_the_state():
    scores = _scores({"base": 0.0})
    with pytest.raises(InputError, match="no scored images of 'edit/x/y/z'"):
        scores.estimate("edit/x/y/z", APPEARANCE, "efficacy")


def test_generation_manifest_seeds_snapshots_and_scoring(tiny_model_dirs, tmp_path):
    """Generate a base_ft state with a snapshot, then score it with a tiny reader and judge."""
    from editpersist.evaluation.generation import read_manifest, run_generation
    from editpersist.evaluation.scoring import score_model
    from editpersist.finetuners.config import FinetuneConfig
    from editpersist.finetuners.subjects import ToySubject
    from editpersist.stages.finetune import run_finetune
    from editpersist.sampling import SamplingConfig
    from editpersist.judges.clip import ClipJudge
    from editpersist.toy.judge import train_judge
    from editpersist.toy.reader import train_reader
    from editpersist.toy.render import render_samples
    from editpersist.toy.world import WorldSpec, sample_captions

    ft_dir = tmp_path / "states/base/ft/lora/sks-square/seed0"
    run_finetune(tiny_model_dirs["sd"], "sd", None, FinetuneConfig("lora", steps=2, lr=1e-2, batch=2, snapshots=(0.5,)),
                 ToySubject("sks-square", "square", "purple"), 4, 32, None, "cpu", ft_dir)
    assert (ft_dir / "snapshot_1.safetensors").is_file()
    quality = QualityConfig(max_captions=2, images_per_caption=2)
    sampling = SamplingConfig(steps=2, guidance=2.0)
    common = dict(model_dir=tiny_model_dirs["sd"], family_name="sd", prompt_set="all", cases=[APPEARANCE],
                  quality=quality, n_per_prompt=2, n_source=3, sampling=sampling, seed=0, device="cpu")
    run_generation(group="base", members={"base": []}, out=tmp_path / "images/base", **common)
    run_generation(group="base/ft/lora/sks-square", members={"base/ft/lora/sks-square/seed0": [ft_dir]},
                   out=tmp_path / "images/ft",
                   subject_prompts=("a sks square",), **common)
    base, ft = read_manifest(tmp_path / "images/base"), read_manifest(tmp_path / "images/ft")
    for col in ("prompt", "seed", "state", "path", "steps", "guidance", "scheduler", "step"):
        assert col in base.columns
    assert (base.groupby("prompt").size()["a circle"], base.groupby("prompt").size()["a square"]) == (3, 2)
    # Same seeds in every state; the snapshot covers the primary prompt only.
    final = ft[ft["step"] == -1]
    pd.testing.assert_frame_equal(base[["prompt", "index", "seed"]].reset_index(drop=True),
                                  final[final["prompt"] != "a sks square"][["prompt", "index", "seed"]]
                                  .reset_index(drop=True))
    assert set(ft.loc[ft["step"] == 1, "prompt"]) == {"a circle"}
    assert (final["prompt"] == "a sks square").sum() == 2
    assert all((tmp_path / "images/ft" / p).is_file() for p in ft["path"])

    samples = sample_captions(WorldSpec(), 128, np.random.default_rng(0))
    images = render_samples(samples, seed=0)
    train_judge(images, samples, WorldSpec(), tmp_path / "judge", steps=2, batch=32, lr=1e-3, seed=0)
    reader = train_reader(images, [s.shape for s in samples], steps=2, batch=32, lr=1e-3, seed=0)
    table, feats, ref = score_model([tmp_path / "images/base", tmp_path / "images/ft"], {"appearance": [APPEARANCE]},
                                    quality, ClipJudge.load(str(tmp_path / "judge")), reader, seed=0,
                                    subjects=(ToySubject("sks-square", "square", "purple"),))
    assert set(table["role"]) == {"source", "positive", "negative", "preserved", "quality", "subject", "target"}
    # The held-out negatives and the preserve prompts are scored in their own roles.
    assert set(table.loc[table["role"] == "negative", "prompt"]) == {p.prompt for p in APPEARANCE.negatives}
    assert set(table.loc[table["role"] == "preserved", "prompt"]) == {"a square", "a triangle"}
    assert set(table.loc[table["role"] == "target", "prompt"]) == {"a blue circle"}
    assert set(table.loc[table["role"] == "subject", "state"]) == {"base/ft/lora/sks-square/seed0"}
    case_rows = table[table["role"] != "quality"]
    assert case_rows["reader_hit"].isin([0.0, 1.0]).all() and case_rows["judge_hit"].between(0, 1).all()
    q = table[table["role"] == "quality"]
    assert len(q) == 2 * 2 * 2 and (q["clip_score"] >= 0).all()  # 2 states x 2 captions x 2 images
    assert feats.shape[0] == len(q) and ref.shape[1] == feats.shape[1]
    assert sorted(q["feature"]) == list(range(len(q)))


def test_weight_diagnostic_sees_a_fine_tune_that_undoes_the_edit_and_its_control(tiny_model_dirs, tmp_path):
    """An edit of one matrix (W0 + 0.1); seed 0's fine-tune of the edited model puts W0 back,
    seed 1's leaves it; the controls (fine-tunes of the base) move W0 by -0.05 and +0.1."""
    from editpersist.editors.base import EditDelta
    from editpersist.evaluation.weights import weight_diagnostics
    from editpersist.families import get_family
    from editpersist.io import save_tensors

    pipe = get_family("sd").load(tiny_model_dirs["sd"])
    key = next(f"unet.{n}" for n, _ in pipe.unet.named_parameters() if n.endswith("attn2.to_k.weight"))
    w0 = pipe.unet.get_parameter(key.removeprefix("unet.")).detach().clone()
    states = tmp_path / "states"
    EditDelta({key: w0 + 0.1}, {"editor": "uce"}).save(states / "edit/uce/appearance/circle-to-blue.safetensors")
    for start, seed, value in (("edit/uce/appearance/circle-to-blue", 0, w0), ("edit/uce/appearance/circle-to-blue",
                               1, w0 + 0.1), ("base", 0, w0 - 0.05), ("base", 1, w0 + 0.1)):
        ft = states / start / f"ft/full/sks-square/seed{seed}"
        ft.mkdir(parents=True)
        save_tensors(ft / "delta.safetensors", {key: value})
    pair = {"model": "m", "editor": "uce", "task": "appearance", "edit": "circle-to-blue", "finetuner": "full",
            "subject": "sks-square", "seeds": [0, 1]}
    frame = weight_diagnostics(tiny_model_dirs["sd"], "sd", [pair], states, "cpu")
    rows = frame[frame["module"] == key].set_index("seed")
    assert rows.loc[0, "share_removed"] == pytest.approx(1.0) and rows.loc[0, "cosine"] == pytest.approx(-1.0)
    assert rows.loc[1, "share_removed"] == pytest.approx(0.0)
    assert rows.loc[0, "control_share_removed"] == pytest.approx(0.5)
    assert rows.loc[1, "control_share_removed"] == pytest.approx(-1.0)
    assert rows.loc[1, "control_cosine"] == pytest.approx(1.0)
    assert frame.loc[frame["module"] == "(all)", "share_removed"].tolist() == pytest.approx([1.0, 0.0])


def test_reedit_solves_from_the_fine_tuned_weights(tiny_model_dirs, tmp_path):
    from editpersist.stages.edit import run_edit
    from editpersist.finetuners.config import FinetuneConfig
    from editpersist.finetuners.subjects import ToySubject
    from editpersist.stages.finetune import run_finetune
    from editpersist.sampling import SamplingConfig

    ft_dir = tmp_path / "ft"
    run_finetune(tiny_model_dirs["sd"], "sd", None, FinetuneConfig("lora", steps=2, lr=5e-2, batch=2),
                 ToySubject("sks-square", "square", "purple"), 4, 32, None, "cpu", ft_dir)
    cfg = {"lam": 0.5, "s_e": 1.0, "s_p": 1.0, "token_mode": "aligned", "guide": ""}
    common = dict(model_dir=tiny_model_dirs["sd"], family_name="sd", editor_name="uce", editor_cfg=cfg,
                  case=APPEARANCE, judge_dir=None, sampling=SamplingConfig(steps=2), seed=0, device="cpu")
    first = run_edit(out=tmp_path / "edit.safetensors", **common)
    again = run_edit(out=tmp_path / "reedit.safetensors", layers=[ft_dir], **common)
    assert first.tensors.keys() == again.tensors.keys()
    # The fused LoRA moved the to_k/to_v the solve starts from, so the solution differs.
    assert any(not torch.equal(first.tensors[k], again.tensors[k]) for k in first.tensors)


def test_one_reedit_job_gives_each_seed_the_delta_it_gets_alone(tiny_model_dirs, tmp_path):
    """run_reedits re-edits every seed of a fine-tune in one job; each seed's delta must be the
    one a job of its own computes (from the edit and that seed's fine-tune, not another's)."""
    from editpersist.editors.base import EditDelta
    from editpersist.finetuners.config import FinetuneConfig
    from editpersist.finetuners.subjects import ToySubject
    from editpersist.sampling import SamplingConfig
    from editpersist.stages.edit import run_edit, run_reedits
    from editpersist.stages.finetune import run_finetune_seeds

    cfg = {"lam": 0.5, "s_e": 1.0, "s_p": 1.0, "token_mode": "aligned", "guide": ""}
    common = dict(model_dir=tiny_model_dirs["sd"], family_name="sd", editor_name="uce", editor_cfg=cfg,
                  case=APPEARANCE, judge_dir=None, sampling=SamplingConfig(steps=2), seed=0, device="cpu")
    edit = tmp_path / "edit.safetensors"
    run_edit(out=edit, **common)
    run_finetune_seeds(tiny_model_dirs["sd"], "sd", edit, FinetuneConfig("lora", steps=2, lr=5e-2, batch=2),
                       ToySubject("sks-square", "square", "purple"), 4, 32, None, "cpu", tmp_path / "ft", seeds=[0, 1])
    run_reedits(edit, tmp_path / "ft", [0, 1], tmp_path / "reedits", **common)
    deltas = [EditDelta.load(tmp_path / f"reedits/seed{k}.safetensors").tensors for k in (0, 1)]
    for k in (0, 1):
        alone = run_edit(out=tmp_path / f"alone{k}.safetensors", layers=[edit, tmp_path / f"ft/seed{k}"], **common)
        assert all(torch.equal(deltas[k][name], alone.tensors[name]) for name in alone.tensors)
    assert any(not torch.equal(deltas[0][name], deltas[1][name]) for name in deltas[0])


def _summary_row(model, finetuner, seed_values, editor="uce", spread=0.05, **extra) -> dict:
    """A primary-metric row of two seeds whose retentions are `seed_values`, each with its own
    replicates (the seed's value plus noise of sd `spread`, drawn for this cell alone)."""
    from editpersist.metrics.seed_interval import seed_level_interval

    values = np.asarray(seed_values, dtype=float)
    rng = np.random.default_rng(abs(hash((model, finetuner, editor))) % 2**32)
    reps = values[:, None] + rng.normal(0, spread, size=(len(values), 200))
    iv = seed_level_interval(values, reps.mean(0))
    retention = float("nan") if np.isnan(values).any() else iv.value
    by_seed = [{"model": model, "editor": editor, "task": "appearance", "edit": "e", "finetuner": finetuner,
                "seed": k, "ft_fidelity": 1.0, "target_reach": 1.0, "kept": True} for k in range(len(values))]
    return {"model": model, "editor": editor, "task": "appearance", "edit": "e", "finetuner": finetuner,
            "ft_data": "s", "relation": "unrelated", "metric": "efficacy", "base": 0.0, "edited": 1.0, "base_ft": 0.0,
            "edited_ft": retention, "retention": retention, "ci_low": iv.low, "ci_high": iv.high,
            "n_images": 64, "effect": 1.0, "effect_ci_low": 0.9, "effect_ci_high": 1.0, "n_seeds": len(values),
            "replicates_dropped": 0, "note": "", "ft_fidelity": 1.0, "target_reach": 1.0,
            "_seeds": tuple(range(len(values))), "_seed_values": values, "_seed_replicates": reps, "_by_seed": by_seed,
            **extra}


EMPTY = pd.DataFrame(columns=["model", "task", "agreement", "n_images"])


def test_summary_ranks_only_within_a_model_task_and_metric():
    """On model a LoRA keeps the edit and DoRA loses it; on model b the reverse. Pooled over models
    they would tie; within each model the order is clear and is stated as such. A level's mean
    is taken seed by seed over its cells, each cell with its own replicates: by hand, a/lora's
    per-seed means are (0.825, 0.925) and its within-seed replicates the mean of the two cells'."""
    from editpersist.evaluation.summary import stratified_ranking, write_summary

    rows = [_summary_row("a", "lora", [0.85, 0.95], spread=0.01), _summary_row("a", "lora", [0.8, 0.9], "refact", 0.2),
            _summary_row("a", "dora", [0.05, 0.15]), _summary_row("a", "dora", [0.1, 0.2], "refact"),
            _summary_row("b", "lora", [0.05, 0.15]), _summary_row("b", "dora", [0.85, 0.95])]
    frame = stratified_ranking(rows, "finetuner")
    assert len(frame) == 4
    assert frame.loc[frame["model"] == "a", "finetuner"].tolist() == ["dora", "lora"]
    assert frame.loc[frame["model"] == "b", "finetuner"].tolist() == ["lora", "dora"]
    lora = frame[(frame["model"] == "a") & (frame["finetuner"] == "lora")].iloc[0]
    per_seed = np.array([0.825, 0.925])
    within = (rows[0]["_seed_replicates"].mean(0) + rows[1]["_seed_replicates"].mean(0)) / 2
    lo, hi = np.percentile(within, [2.5, 97.5])
    se = np.sqrt(per_seed.var(ddof=1) / 2 + ((hi - lo) / 3.919928) ** 2)
    assert lora["mean_retention"] == pytest.approx(0.875) and lora["cells"] == 2 and lora["n_seeds"] == 2
    assert lora["ci_low"] == pytest.approx(0.875 - 12.706205 * se, rel=1e-5)
    assert lora["ci_high"] == pytest.approx(0.875 + 12.706205 * se, rel=1e-5)
    text = write_summary(rows, EMPTY, "reader", 200)
    assert "**a / appearance / efficacy**: by finetuner: dora retains least (0.12" in text
    assert "**b / appearance / efficacy**: by finetuner: lora retains least (0.10" in text
    # The two seeds' differences agree (0.75 and 0.75 on model a): the paired difference is
    # established though each level's own interval is t(1) wide.
    assert "lora - dora 0.75 [" in text and "on the same cells and 2 seeds: the order is established" in text
    assert "fine-tune seeds (2 per cell)" in text


def test_a_replace_case_probes_its_target_prompt_and_no_other_case_does():
    cases = toy_cases()
    appearance, role = cases["appearance"][0], cases["role"][0]
    assert ("target", Probe("a blue circle", "a circle", "a blue circle")) in case_probes(appearance)
    # The king drawn as a triangle: what an unedited image of the target shows instead is the old shape.
    assert ("target", Probe("a triangle", "a square", "a triangle")) in case_probes(role)
    assert all(role != "target" for c in (*cases["debias"], *cases["unsafe"]) for role, _ in case_probes(c))
    counts = state_prompts([appearance], QualityConfig(max_captions=0), 10, 32)
    assert counts["a blue circle"] == 10
    # The prompts that decide whether a fine-tune seed stays (the target, the subject's) get
    # images_per_check; every other probe keeps its count.
    checked = state_prompts([appearance], QualityConfig(max_captions=0), 10, 32, ("a sks square",), n_check=24)
    assert (checked["a blue circle"], checked["a sks square"]) == (24, 24)
    assert {p: n for p, n in checked.items() if p not in ("a blue circle", "a sks square")} == \
        {p: n for p, n in counts.items() if p != "a blue circle"}
    from editpersist.evaluation.study import image_counts

    ev = {"images_per_prompt": 10, "images_per_source": 32, "images_per_check": 24,
          "quality": {"images_per_caption": 2}}
    assert (image_counts(ev)["target"], image_counts(ev)["subject"], image_counts(ev)["positive"]) == (24, 24, 10)


class PreferenceJudge:
    """Stands in for ClipJudge: records the texts it is asked to prefer between."""

    def __init__(self):
        self.asked = []

    def prefer_first_features(self, features, first, second):
        self.asked.append((list(first), list(second)))
        return np.full(len(features), 0.25)


def test_a_target_prompts_image_counts_when_it_shows_the_target():
    """By hand: of a blue, a green and a red circle, only the blue one shows "a blue circle"; of a
    triangle and a square, only the triangle shows the king's new shape. The judge is asked the
    target against what the source showed before."""
    role = toy_cases()["role"][0]
    for case, reads, expected, asked in (
            (APPEARANCE, [{"color": "blue", "shape": "circle"}, {"color": "green", "shape": "circle"},
                          {"color": "red", "shape": "circle"}], [1.0, 0.0, 0.0], (["a blue circle"], ["a circle"])),
            (role, [{"color": "red", "shape": "triangle"}, {"color": "red", "shape": "square"}], [1.0, 0.0],
             (["a triangle"], ["a square"]))):
        judge = PreferenceJudge()
        hits = probe_hits(case, "target", case.target, reads, torch.zeros(len(reads), 4), judge)
        assert hits["reader_hit"].tolist() == expected and judge.asked == [asked]


def _with_subject(scores, fidelity: dict[str, float]):
    """Adds 8 images of "a sks square" per state, showing the subject at the given rates."""
    subject = []
    for state, rate in fidelity.items():
        for i in range(8):
            subject.append({"state": state, "step": -1, "case": "", "task": "subject", "role": "subject",
                            "prompt": "a sks square", "index": i, "reader_hit": float(i < rate * 8),
                            "judge_hit": np.nan, "reader_attr": -1, "judge_attr": -1, "clip_score": np.nan,
                            "feature": -1})
    scores.table = pd.concat([scores.table, pd.DataFrame(subject)], ignore_index=True)
    scores.__post_init__()
    return scores


def test_a_seed_whose_fine_tune_did_not_learn_leaves_its_cell_in_every_table():
    """Seed 0 keeps the edit (1.0) but its edited fine-tune learned its subject in 4 of 8 images;
    seed 1 loses it (0.0), both its fine-tunes learned (0.75, 1.0). Each seed's ft_fidelity is the
    lower of its base_ft's and edited_ft's (0.5, 0.75); the row's the lowest of its seeds'. Under
    min_ft_fidelity 0.6 seed 0 leaves the cell in the table, the curve, the re-edit rows and the
    per-seed rows alike, and the retention is seed 1's; under 0.8 no seed is left."""
    from editpersist.evaluation.persistence import NO_SEED, SeedRule, curve_rows, reedit_rows

    cell = make_cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s", "unrelated", seeds=(0, 1))
    states = {"base": 0.0, EDITED: 1.0, _ft("base", 0): 0.0, _ft("base", 1): 0.0, _ft(EDITED, 0): 1.0,
              _ft(EDITED, 1): 0.0, f"{_ft(EDITED, 0)}/reedit": 1.0, f"{_ft(EDITED, 1)}/reedit": 0.5}
    scores = _with_subject(_scores(states), {_ft("base", 0): 1.0, _ft("base", 1): 0.75, _ft(EDITED, 0): 0.5,
                                             _ft(EDITED, 1): 1.0})
    row = persistence_rows(scores, cell)[0]
    assert row["ft_fidelity"] == 0.5 and row["retention"] == 0.5 and row["n_seeds"] == 2
    assert [s["ft_fidelity"] for s in row["_by_seed"]] == [0.5, 0.75]
    rule = SeedRule(min_ft_fidelity=0.6)
    row = persistence_rows(scores, cell, rule=rule)[0]
    assert row["n_seeds"] == 1 and row["retention"] == 0.0 and row["_seeds"] == (1,)
    assert row["note"].startswith("seed 0 left out: its fine-tune shows the subject in 0.50 of images "
                                  "(min_ft_fidelity 0.6)")
    assert [(s["seed"], s["retention"], s["kept"]) for s in row["_by_seed"]] == [(0, 1.0, False), (1, 0.0, True)]
    end = curve_rows(scores, cell, total_steps=200, rule=rule)[-1]
    assert (end["retention"], end["n_seeds"]) == (0.0, 1) and end["note"].startswith("seed 0 left out")
    reedit = reedit_rows(scores, cell, rule=rule)[0]
    assert (reedit["restored"], reedit["n_seeds"]) == (0.5, 1)
    none = persistence_rows(scores, cell, rule=SeedRule(min_ft_fidelity=0.8))[0]
    assert none["n_seeds"] == 0 and np.isnan(none["retention"]) and np.isnan(none["ci_low"]) and NO_SEED in none["note"]
    assert not any(s["kept"] for s in none["_by_seed"])


def test_reedit_and_transfer_rows_name_their_own_numerator():
    """Each table reads the same comparison under its own column names: the re-edited state is
    `reedited` and its ratio `restored` (0.75, not edited_ft's 0.25); the adapter moved onto the
    edit is `transfer` with `retention_transfer` 0.5, beside the cell's own fine-tune's 0.25."""
    from editpersist.evaluation.persistence import reedit_rows, transfer_rows

    cell = make_cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s", "unrelated")
    states = {"base": 0.0, EDITED: 1.0, _ft("base"): 0.0, _ft(EDITED): 0.25, f"{_ft(EDITED)}/reedit": 0.75,
              f"{EDITED}/transfer/lora/s/seed0": 0.5}
    reedit = reedit_rows(_scores(states), cell)[0]
    assert (reedit["edited"], reedit["edited_ft"], reedit["reedited"], reedit["restored"]) == (1.0, 0.25, 0.75, 0.75)
    transfer = transfer_rows(_scores(states), cell)[0]
    assert (transfer["transfer"], transfer["retention_transfer"], transfer["retention_own_ft"]) == (0.5, 0.5, 0.25)
    assert transfer["n_seeds"] == 1 and transfer["note"] == ONE_SEED


def test_a_seed_whose_fine_tune_erased_the_target_leaves_its_cell_and_the_summary_names_it():
    """base_ft's seed 1 draws "a blue circle" blue in 16 of 64 images: under min_target_reach 0.8
    it leaves the cell; the summary names that seed, and a cell left with no seed."""
    from editpersist.evaluation.persistence import SeedRule
    from editpersist.evaluation.summary import write_summary

    states = {"base": 0.0, EDITED: 1.0, _ft("base", 0): 0.0, _ft("base", 1): 0.0, _ft(EDITED, 0): 1.0,
              _ft(EDITED, 1): 0.0}
    targets = {_ft("base", 0): 1.0, _ft("base", 1): 0.25}
    cell = make_cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s", "unrelated", seeds=(0, 1))
    scores = _scores(states, target_rates=targets)
    rule = SeedRule(min_target_reach=0.8)
    row = persistence_rows(scores, cell, min_effect=0.1, rule=rule)[0]
    assert row["n_seeds"] == 1 and row["retention"] == 1.0 and row["target_reach"] == 1.0
    assert row["note"].startswith("seed 1 left out: its fine-tuned base draws the target in 0.25 of images")
    # The same fine-tunes, as a cell of seed 1 alone.
    gone = persistence_rows(scores, make_cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s", "unrelated", seeds=(1,)),
                            min_effect=0.1, rule=rule)[0]
    text = write_summary([row, gone], EMPTY, "reader", 200, min_target_reach=0.8)
    assert ("2 fine-tune seeds are left out of their cells because their fine-tune erased the edit's target "
            "itself") in text
    assert "toy-sd/uce/appearance/circle-to-blue/lora seed 1 (0.25)" in text
    assert "1 cells kept no fine-tune seed and state no retention: toy-sd/uce/appearance/circle-to-blue/lora." in text
    assert "1 of 2 cells state a retention" in text


def test_a_ranking_compares_levels_only_on_the_cells_every_level_has():
    """refact's DoRA cell did not state a retention: ranking fine-tuners, LoRA's mean must not
    count refact's LoRA cell (0.1) that DoRA has no counterpart of, or LoRA would look 0.4 worse
    than on the cells the two share."""
    from editpersist.evaluation.summary import stratified_ranking

    rows = [_summary_row("a", "lora", [0.85, 0.95]), _summary_row("a", "lora", [0.05, 0.15], "refact"),
            _summary_row("a", "dora", [0.45, 0.55]), _summary_row("a", "dora", [np.nan, np.nan], "refact")]
    frame = stratified_ranking(rows, "finetuner").set_index("finetuner")
    assert frame.loc["lora", "mean_retention"] == pytest.approx(0.9) and frame.loc["lora", "cells"] == 1
    assert frame.loc["dora", "mean_retention"] == pytest.approx(0.5)


def test_summary_counts_cells_without_an_established_effect():
    from editpersist.evaluation.summary import write_summary

    rows = [_summary_row("a", "lora", [np.nan, np.nan], note="edit effect not established: ..."),
            _summary_row("a", "dora", [0.97, 0.99], spread=0.001)]
    text = write_summary(rows, EMPTY, "reader", 200)
    assert "1 of 2 cells state a retention" in text and "1 keep the edit" in text
    assert "No stratum has two fine-tuners or editors" in text


def test_heatmap_panels_average_a_tasks_edits_and_leave_missing_cells_blank(tmp_path):
    from editpersist.evaluation import plots

    rec = lambda model, editor, task, edit, ft, r: {"model": model, "editor": editor, "task": task,  # noqa: E731
                                                    "edit": edit, "finetuner": ft, "metric": "efficacy", "retention": r}
    table = pd.DataFrame([rec("m", "uce", "appearance", "e1", "lora", 0.2), rec("m", "uce", "appearance", "e2", "lora", 0.6),
                          rec("m", "uce", "appearance", "e3", "lora", float("nan")),
                          rec("m", "refact", "appearance", "e1", "dora", 0.9),
                          rec("m", "uce", "debias", "d1", "lora", 0.5)])
    panels = plots.heatmap_panels(table)
    assert list(panels) == ["appearance", "debias"]
    app = panels["appearance"]
    assert list(app.index) == [("m", "refact"), ("m", "uce")] and list(app.columns) == ["dora", "lora"]
    assert app.loc[("m", "uce"), "lora"] == pytest.approx(0.4)  # the NaN edit is left out, not a zero
    assert app.loc[("m", "refact"), "dora"] == 0.9 and np.isnan(app.loc[("m", "uce"), "dora"])
    assert np.isnan(panels["debias"].loc[("m", "refact"), "lora"])  # ReFACT has no debias mode
    plots.retention_heatmap(table, tmp_path / "heat.png")
    plots.retention_curves(pd.DataFrame(columns=["model", "task", "editor", "finetuner", "step", "retention",
                                                 "ci_low", "ci_high"]), tmp_path / "curves.png")


def test_the_figures_show_exactly_the_cells_the_summary_states_and_clip_nothing(tmp_path):
    """Four cells: one keeps its edit past 1 (1.3), one reverses it (-0.2), one has no
    established effect and one lost every seed to the fine-tune filters. The summary states two
    retentions; the forest plot and the heatmap show those two, each where it is, and the
    colour scale reaches both."""
    from editpersist.evaluation import plots
    from editpersist.evaluation.study import stated_cells
    from editpersist.evaluation.summary import write_summary

    rows = [_summary_row("a", "lora", [1.3, 1.3], spread=0.01, edit="past"),
            _summary_row("a", "dora", [-0.2, -0.2], spread=0.01, edit="reversed"),
            _summary_row("a", "full", [np.nan, np.nan], edit="no-effect"),
            _summary_row("a", "lora", [np.nan, np.nan], edit="no-seed", n_seeds=0)]
    text = write_summary(rows, EMPTY, "reader", 200)
    assert "Of those that state a retention (2)" in text
    table = pd.DataFrame(rows).drop(columns=[k for k in rows[0] if k.startswith("_")])
    stated = stated_cells(table)
    panels = plots.forest_panels(stated)
    assert list(panels) == [("a", "appearance")]
    assert sorted(panels[("a", "appearance")]["edit"]) == ["past", "reversed"]
    assert plots.retention_forest(stated, tmp_path / "forest") == [("a", "appearance")]
    assert (tmp_path / "forest/a.appearance.png").is_file()
    heat = plots.heatmap_panels(stated)["appearance"]
    assert heat.loc[("a", "uce"), "lora"] == pytest.approx(1.3) and heat.loc[("a", "uce"), "dora"] == pytest.approx(-0.2)
    assert "full" not in heat.columns  # the cell without an established effect is not a blank 0
    assert plots.colour_range(heat.to_numpy(dtype=float).ravel()) == pytest.approx((-0.2, 1.3))
    plots.retention_heatmap(stated, tmp_path / "heat.png")


def test_one_job_for_several_seeds_gives_each_seed_the_images_it_would_get_alone(tiny_model_dirs, tmp_path):
    """A group job applies and undoes each member's layers in turn (snapshots, a text-encoder
    adapter, an edit shared by both): every image must equal the one its state gets alone."""
    from editpersist.editors.base import EditDelta
    from editpersist.evaluation.generation import load_images, read_manifest, run_generation
    from editpersist.families import get_family
    from editpersist.finetuners.config import FinetuneConfig
    from editpersist.finetuners.subjects import ToySubject
    from editpersist.stages.finetune import run_finetune_seeds
    from editpersist.sampling import SamplingConfig

    pipe = get_family("sd").load(tiny_model_dirs["sd"])
    key = next(f"unet.{n}" for n, _ in pipe.unet.named_parameters() if n.endswith("attn2.to_k.weight"))
    edit = tmp_path / "edit.safetensors"
    EditDelta({key: pipe.unet.get_parameter(key.removeprefix("unet.")).detach() * 1.5}, {}).save(edit)
    ft_dir = tmp_path / "ft"
    cfg = FinetuneConfig("lora", steps=2, lr=5e-2, batch=2, snapshots=(0.5,), train_text_encoder=True)
    run_finetune_seeds(tiny_model_dirs["sd"], "sd", edit, cfg, ToySubject("sks-square", "square", "purple"), 4, 32,
                       None, "cpu", ft_dir, seeds=[0, 1])
    group = "edit/uce/appearance/circle-to-blue/ft/lora/sks-square"
    members = {f"{group}/seed{k}": [edit, ft_dir / f"seed{k}"] for k in (0, 1)}
    common = dict(model_dir=tiny_model_dirs["sd"], family_name="sd", group=group, prompt_set="all",
                  cases=[APPEARANCE], quality=QualityConfig(max_captions=1, images_per_caption=2), n_per_prompt=2,
                  n_source=2, sampling=SamplingConfig(steps=2, guidance=2.0), seed=0, device="cpu")
    run_generation(members=members, out=tmp_path / "both", **common)
    both = read_manifest(tmp_path / "both")
    assert set(both["state"]) == set(members) and (both["group"] == group).all()
    for state, layers in members.items():
        run_generation(members={state: layers}, out=tmp_path / state.replace("/", "_"), **common)
        alone = read_manifest(tmp_path / state.replace("/", "_"))
        mine = both[both["state"] == state]
        # Snapshots exist on the first seed only; the second member follows them.
        assert len(mine) == len(alone) and (mine["step"] == 1).any() == state.endswith("seed0")
        for step in sorted(set(mine["step"])):
            a = mine[mine["step"] == step].sort_values(["prompt", "index"])
            b = alone[alone["step"] == step].sort_values(["prompt", "index"])
            np.testing.assert_array_equal(load_images(tmp_path / "both", a["path"].tolist()),
                                          load_images(tmp_path / state.replace("/", "_"), b["path"].tolist()))
    # The two seeds' fine-tunes differ, so their images do too (a member left applied would not show).
    s0, s1 = (both[(both["state"] == f"{group}/seed{k}") & (both["step"] == -1)].sort_values(["prompt", "index"])
              for k in (0, 1))
    assert not np.array_equal(load_images(tmp_path / "both", s0["path"].tolist()),
                              load_images(tmp_path / "both", s1["path"].tolist()))


def test_snapshot_images_leave_the_final_state_untouched(tiny_model_dirs, tmp_path):
    """Generating a fine-tune's snapshots first (text-encoder adapter included) must not change
    the images of the finished state: every weight a snapshot fused is restored."""
    import shutil

    from editpersist.evaluation.generation import load_images, read_manifest, run_generation
    from editpersist.finetuners.config import FinetuneConfig
    from editpersist.finetuners.subjects import ToySubject
    from editpersist.stages.finetune import run_finetune
    from editpersist.sampling import SamplingConfig

    ft_dir = tmp_path / "ft"
    cfg = FinetuneConfig("lora", steps=2, lr=5e-2, batch=2, snapshots=(0.5,), train_text_encoder=True)
    run_finetune(tiny_model_dirs["sd"], "sd", None, cfg, ToySubject("sks-square", "square", "purple"), 4, 32, None,
                 "cpu", ft_dir)
    plain = tmp_path / "plain"
    shutil.copytree(ft_dir, plain)
    (plain / "snapshot_1.safetensors").unlink()
    common = dict(model_dir=tiny_model_dirs["sd"], family_name="sd", group="base/ft/lora/sks-square",
                  prompt_set="all", cases=[APPEARANCE], quality=QualityConfig(max_captions=1, images_per_caption=2),
                  n_per_prompt=2, n_source=2, sampling=SamplingConfig(steps=2, guidance=2.0), seed=0, device="cpu")
    state = "base/ft/lora/sks-square/seed0"
    run_generation(members={state: [ft_dir]}, out=tmp_path / "with", **common)
    run_generation(members={state: [plain]}, out=tmp_path / "without", **common)
    finals = []
    for out in ("with", "without"):
        m = read_manifest(tmp_path / out)
        finals.append(load_images(tmp_path / out, m.loc[m["step"] == -1, "path"].tolist()))
    assert (read_manifest(tmp_path / "with")["step"] == 1).any()
    np.testing.assert_array_equal(finals[0], finals[1])


def test_packed_batches_give_each_prompt_the_images_it_gets_alone(tiny_model_dirs):
    """generate_counts fills batches across prompts of different image counts; an image depends
    only on its (prompt, index) seed, so each prompt's images equal those generated alone."""
    from editpersist.families import get_family
    from editpersist.sampling import SamplingConfig, generate, generate_counts

    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    cfg = SamplingConfig(steps=2, guidance=2.0, batch=4)
    packed, jobs = generate_counts(pipe, family, {"a king": 3, "a red circle": 4, "a square": 1}, cfg, base_seed=5)
    assert [(p, i) for p, i, _ in jobs] == [("a king", 0), ("a king", 1), ("a king", 2), *[("a red circle", i)
                                            for i in range(4)], ("a square", 0)]
    alone, _ = generate(pipe, family, ["a red circle"], 4, cfg, base_seed=5)
    np.testing.assert_array_equal(packed[3:7], alone)


def test_the_summary_says_which_cells_decide_nothing_and_why():
    """Hand-made cells: three agreeing seeds at 0.97 keep the edit; three at 0.51 keep part of it;
    two seeds at 0.95 and 0.05 disagree; two at 0.5 and 0.6 agree but two seeds leave t = 12.7."""
    from editpersist.evaluation.summary import verdict, verdict_line

    rows = {"keeps": _summary_row("a", "lora", [0.96, 0.97, 0.98], spread=0.005),
            "partly": _summary_row("a", "dora", [0.50, 0.51, 0.52], spread=0.005),
            "seeds disagree": _summary_row("a", "full", [0.95, 0.05], spread=0.01),
            "too few seeds": _summary_row("a", "dreambooth", [0.5, 0.6], spread=0.01),
            "one seed": _summary_row("b", "lora", [0.9])}
    assert {name: verdict(r) for name, r in rows.items()} == {name: name for name in rows}
    line = verdict_line(list(rows.values()))
    assert line.startswith("- Of those that state a retention (5), 1 keep the edit (interval at or above 0.8), "
                           "0 lose it (at or below 0.2) and 1 keep part of it (inside (0.2, 0.8)); 3 are undecided: ")
    assert "1 because their seeds disagree (one keeps the edit, another loses it: a/uce/appearance/e/full)" in line
    assert "1 whose seeds agree but whose 2 seeds leave the interval across 0.2 or 0.8" in line
    assert "1 resting on one fine-tune seed" in line
