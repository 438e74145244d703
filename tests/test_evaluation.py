"""Evaluation: state names, generation manifests, scoring, bootstrap, metrics and the table."""

import numpy as np
import pandas as pd
import pytest
import torch

from editpersist.errors import InputError
from editpersist.evaluation.persistence import COLUMNS, Cell, ModelScores, persistence_rows, table_frame
from editpersist.evaluation.prompts import QualityConfig, case_key
from editpersist.evaluation.weights import update_alignment
from editpersist.metrics.bootstrap import draw_indices, percentile_interval, resample, retention
from editpersist.metrics.fid import FrechetReference
from editpersist.metrics.task_metrics import debias_gap
from editpersist.states import parse_state, state_layers
from editpersist.tasks.toy import toy_cases

APPEARANCE = toy_cases()["appearance"][0]
EDITED = "edit/uce/appearance/circle-to-blue"


def test_state_names_parse_into_kinds_and_layers():
    cases = {
        "base": ("base", []),
        EDITED: ("edited", [f"{EDITED}.safetensors"]),
        "base/ft/lora/sks-square": ("base_ft", ["base/ft/lora/sks-square"]),
        f"{EDITED}/ft/dora/sks-square": ("edited_ft", [f"{EDITED}.safetensors", f"{EDITED}/ft/dora/sks-square"]),
        f"{EDITED}/ft/dora/sks-square/reedit": (
            "reedited", [f"{EDITED}.safetensors", f"{EDITED}/ft/dora/sks-square",
                         "reedit/uce/appearance/circle-to-blue/dora/sks-square.safetensors"]),
        f"{EDITED}/transfer/lora/sks-square": ("transfer", [f"{EDITED}.safetensors", "base/ft/lora/sks-square"]),
    }
    for name, (kind, layers) in cases.items():
        assert parse_state(name).kind == kind, name
        assert state_layers(name) == layers, name
    assert parse_state(f"{EDITED}/ft/dora/sks-square").parts == {
        "editor": "uce", "task": "appearance", "edit": "circle-to-blue", "finetuner": "dora", "subject": "sks-square"}


@pytest.mark.parametrize("bad", ["", "edited", "base/reedit", "edit/uce/appearance", "base/ft/lora", "../base"])
def test_malformed_state_names_are_rejected(bad):
    with pytest.raises(InputError, match="not a model state name"):
        parse_state(bad)


def test_retention_is_nan_when_the_edit_changed_nothing():
    assert retention(0.0, 1.0, 0.1, 0.6) == pytest.approx(0.5)
    assert np.isnan(retention(0.3, 0.3, 0.2, 0.5))
    r = retention(np.zeros(3), np.array([1.0, 0.0, 0.5]), np.zeros(3), np.array([0.5, 0.5, 0.5]))
    assert r[0] == 0.5 and np.isnan(r[1]) and r[2] == 1.0


def test_bootstrap_draws_depend_only_on_shape_and_seed():
    a, b = draw_indices((3, 5), 50, seed=1), draw_indices((3, 5), 50, seed=1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == (50, 3) and a[1].shape == (50, 3, 5)
    assert not np.array_equal(a[1], draw_indices((3, 5), 50, seed=2)[1])
    grid = np.arange(15.0).reshape(3, 5)
    reps = resample(grid, *a)
    assert reps.shape == (50, 3, 5)
    # every resampled value comes from the prompt row that was drawn
    assert np.all(reps // 5 == a[0][:, :, None])


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


def test_debias_gap_is_the_mean_absolute_gap_to_the_desired_ratio():
    attrs = np.array([[0, 0, 0, 1], [0, 1, 1, -1]])  # prompt 1: 3/4 vs 1/4; prompt 2: 1/4, 2/4, one neither
    gap = debias_gap(attrs, np.array([0.5, 0.5]))
    assert gap == pytest.approx(np.mean([0.25, np.mean([0.25, 0.0])]))


def test_update_alignment_measures_how_much_of_the_edit_was_undone():
    e = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    undone = update_alignment(e, -e)
    assert undone["cosine"] == pytest.approx(-1.0) and undone["share_removed"] == pytest.approx(1.0)
    half = update_alignment(e, -0.5 * e + torch.tensor([[2.0, -1.0], [0.0, 0.0]]))  # orthogonal extra
    assert half["share_removed"] == pytest.approx(0.5)
    untouched = update_alignment(e, torch.zeros_like(e))
    assert np.isnan(untouched["cosine"]) and untouched["share_removed"] == 0.0


def _scores(hit_rates: dict[str, float], n: int = 64, samples: int = 400) -> ModelScores:
    """Synthetic scores of one appearance case: exact hit rates per state, plus quality rows."""
    rows, feats = [], []
    rng = np.random.default_rng(0)
    for state, rate in hit_rates.items():
        for role, probe in [("source", APPEARANCE.source), *[("positive", p) for p in APPEARANCE.positives],
                            *[("negative", p) for p in APPEARANCE.negatives]]:
            k = round(rate * n) if role != "negative" else n
            hits = np.r_[np.ones(k), np.zeros(n - k)]
            for i in range(n):
                rows.append({"state": state, "step": -1, "case": case_key(APPEARANCE), "task": "appearance",
                             "role": role, "prompt": probe.prompt, "index": i, "reader_hit": hits[i],
                             "judge_hit": hits[i], "reader_attr": -1, "judge_attr": -1, "clip_score": np.nan,
                             "feature": -1})
        for c in range(2):
            for i in range(8):
                rows.append({"state": state, "step": -1, "case": "", "task": "quality", "role": "quality",
                             "prompt": f"caption {c}", "index": i, "reader_hit": 1.0, "judge_hit": np.nan,
                             "reader_attr": -1, "judge_attr": -1, "clip_score": 20.0 + rate,
                             "feature": len(feats)})
                feats.append(rng.normal(size=4))
    return ModelScores(pd.DataFrame(rows), np.array(feats), FrechetReference.fit(rng.normal(size=(64, 4))),
                       "reader", samples, 0)


def test_persistence_rows_have_the_contract_columns_and_exact_point_values():
    states = {"base": 0.0, EDITED: 0.9375, "base/ft/lora/s": 0.0, f"{EDITED}/ft/lora/s": 0.46875}
    cell = Cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s", "unrelated")
    rows = persistence_rows(_scores(states), cell)
    assert [r["metric"] for r in rows] == ["efficacy", "generality", "specificity", "clip_score", "fid"]
    eff = rows[0]
    assert eff["base"] == 0 and eff["edited"] == 0.9375 and eff["edited_ft"] == 0.46875
    assert eff["retention"] == pytest.approx(0.5)
    assert eff["ci_low"] < 0.5 < eff["ci_high"] and eff["ci_high"] - eff["ci_low"] < 0.4
    assert eff["n_images"] == 64 and rows[1]["n_images"] == 4 * 64
    # Negatives keep the original in every state: the edit did not move specificity -> NaN.
    assert np.isnan(rows[2]["retention"])
    frame = table_frame(rows, COLUMNS)
    assert list(frame.columns) == COLUMNS and len(frame) == 5


def test_estimates_are_identical_for_identical_data():
    states = {"base": 0.0, EDITED: 1.0, "base/ft/lora/s": 0.0, f"{EDITED}/ft/lora/s": 1.0}
    scores = _scores(states)
    a = scores.estimate(EDITED, APPEARANCE, "efficacy")
    b = _scores(states).estimate(EDITED, APPEARANCE, "efficacy")
    np.testing.assert_array_equal(a.replicates, b.replicates)


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
    from editpersist.finetuning import run_finetune
    from editpersist.generate import SamplingConfig
    from editpersist.judges.clip import ClipJudge
    from editpersist.toy.judge import train_judge
    from editpersist.toy.reader import train_reader
    from editpersist.toy.render import render_samples
    from editpersist.toy.world import WorldSpec, sample_captions

    ft_dir = tmp_path / "states/base/ft/lora/sks-square"
    run_finetune(tiny_model_dirs["sd"], "sd", None, FinetuneConfig("lora", steps=2, lr=1e-2, batch=2, snapshots=(0.5,)),
                 ToySubject("sks-square", "square", "purple"), 4, 32, None, "cpu", ft_dir)
    assert (ft_dir / "snapshot_1.safetensors").is_file()
    quality = QualityConfig(max_captions=2, images_per_caption=2)
    sampling = SamplingConfig(steps=2, guidance=2.0)
    common = dict(model_dir=tiny_model_dirs["sd"], family_name="sd", prompt_set="all", cases=[APPEARANCE],
                  quality=quality, n_per_prompt=2, n_source=3, sampling=sampling, seed=0, device="cpu")
    run_generation(state="base", layers=[], out=tmp_path / "images/base", **common)
    run_generation(state="base/ft/lora/sks-square", layers=[ft_dir], out=tmp_path / "images/ft",
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
    assert set(table["role"]) == {"source", "positive", "negative", "quality", "subject"}
    assert set(table.loc[table["role"] == "subject", "state"]) == {"base/ft/lora/sks-square"}
    case_rows = table[table["role"] != "quality"]
    assert case_rows["reader_hit"].isin([0.0, 1.0]).all() and case_rows["judge_hit"].between(0, 1).all()
    q = table[table["role"] == "quality"]
    assert len(q) == 2 * 2 * 2 and (q["clip_score"] >= 0).all()  # 2 states x 2 captions x 2 images
    assert feats.shape[0] == len(q) and ref.shape[1] == feats.shape[1]
    assert sorted(q["feature"]) == list(range(len(q)))


def test_weight_diagnostic_sees_a_fine_tune_that_undoes_the_edit(tiny_model_dirs, tmp_path):
    """An edit of one matrix, then a 'fine-tune' whose delta puts the base values back."""
    from editpersist.editors.base import EditDelta
    from editpersist.evaluation.weights import weight_diagnostics
    from editpersist.families import get_family
    from editpersist.io import save_tensors

    pipe = get_family("sd").load(tiny_model_dirs["sd"])
    key = next(f"unet.{n}" for n, _ in pipe.unet.named_parameters() if n.endswith("attn2.to_k.weight"))
    w0 = pipe.unet.get_parameter(key.removeprefix("unet.")).detach().clone()
    states = tmp_path / "states"
    EditDelta({key: w0 + 0.1}, {"editor": "uce"}).save(states / "edit/uce/appearance/circle-to-blue.safetensors")
    ft = states / "edit/uce/appearance/circle-to-blue/ft/full/sks-square"
    ft.mkdir(parents=True)
    save_tensors(ft / "delta.safetensors", {key: w0})
    pair = {"model": "m", "editor": "uce", "task": "appearance", "edit": "circle-to-blue", "finetuner": "full",
            "subject": "sks-square"}
    frame = weight_diagnostics(tiny_model_dirs["sd"], "sd", [pair], states, "cpu")
    row = frame[frame["module"] == key].iloc[0]
    assert row["share_removed"] == pytest.approx(1.0) and row["cosine"] == pytest.approx(-1.0)
    assert frame.loc[frame["module"] == "(all)", "share_removed"].item() == pytest.approx(1.0)


def test_reedit_solves_from_the_fine_tuned_weights(tiny_model_dirs, tmp_path):
    from editpersist.editing import run_edit
    from editpersist.finetuners.config import FinetuneConfig
    from editpersist.finetuners.subjects import ToySubject
    from editpersist.finetuning import run_finetune
    from editpersist.generate import SamplingConfig

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


def test_summary_is_written_when_no_edit_took():
    import pandas as pd

    from editpersist.evaluation.summary import write_summary

    row = {"model": "m", "editor": "uce", "task": "appearance", "edit": "e", "finetuner": "lora", "ft_data": "s",
           "relation": "unrelated", "metric": "efficacy", "base": 0.0, "edited": 0.0, "base_ft": 0.0,
           "edited_ft": 0.0, "retention": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
           "n_images": 4, "_replicates": np.full(10, np.nan)}
    text = write_summary([row], pd.DataFrame(columns=["model", "task", "agreement", "n_images"]), "reader", 100)
    assert text.startswith("# editpersist summary") and "0 of 1 cells whose edit took" in text


def test_figures_are_drawn_for_empty_and_all_nan_tables(tmp_path):
    import pandas as pd

    from editpersist.evaluation import plots

    plots.retention_curves(pd.DataFrame(columns=["model", "task", "editor", "finetuner", "step", "retention",
                                                 "ci_low", "ci_high"]), tmp_path / "curves.png")
    table = pd.DataFrame([{"model": "m", "editor": "uce", "task": "appearance", "finetuner": "lora",
                           "metric": "efficacy", "retention": float("nan")}])
    plots.retention_heatmap(table, tmp_path / "heat.png")
    weights = pd.DataFrame([{"editor": "uce", "finetuner": "lora", "share_removed": float("nan"),
                             "retention": float("nan")}])
    plots.weights_vs_retention(weights, tmp_path / "weights.png")
    assert all((tmp_path / f).stat().st_size > 0 for f in ("curves.png", "heat.png", "weights.png"))


def test_snapshot_images_leave_the_final_state_untouched(tiny_model_dirs, tmp_path):
    """Generating a fine-tune's snapshots first (text-encoder adapter included) must not change
    the images of the finished state: every weight a snapshot fused is restored."""
    import shutil

    from editpersist.evaluation.generation import load_images, read_manifest, run_generation
    from editpersist.finetuners.config import FinetuneConfig
    from editpersist.finetuners.subjects import ToySubject
    from editpersist.finetuning import run_finetune
    from editpersist.generate import SamplingConfig

    ft_dir = tmp_path / "ft"
    cfg = FinetuneConfig("lora", steps=2, lr=5e-2, batch=2, snapshots=(0.5,), train_text_encoder=True)
    run_finetune(tiny_model_dirs["sd"], "sd", None, cfg, ToySubject("sks-square", "square", "purple"), 4, 32, None,
                 "cpu", ft_dir)
    plain = tmp_path / "plain"
    shutil.copytree(ft_dir, plain)
    (plain / "snapshot_1.safetensors").unlink()
    common = dict(model_dir=tiny_model_dirs["sd"], family_name="sd", state="base/ft/lora/sks-square",
                  prompt_set="all", cases=[APPEARANCE], quality=QualityConfig(max_captions=1, images_per_caption=2),
                  n_per_prompt=2, n_source=2, sampling=SamplingConfig(steps=2, guidance=2.0), seed=0, device="cpu")
    run_generation(layers=[ft_dir], out=tmp_path / "with", **common)
    run_generation(layers=[plain], out=tmp_path / "without", **common)
    finals = []
    for out in ("with", "without"):
        m = read_manifest(tmp_path / out)
        finals.append(load_images(tmp_path / out, m.loc[m["step"] == -1, "path"].tolist()))
    assert (read_manifest(tmp_path / "with")["step"] == 1).any()
    np.testing.assert_array_equal(finals[0], finals[1])
