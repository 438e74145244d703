"""The workflow as a user runs it: dry run of the default config, and a tiny toy-world build."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_CONFIG, new_workdir, run_snakemake
from editpersist.evaluation.prompts import PRIMARY

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_of_default_config_lists_the_toy_build(tmp_path):
    res = run_snakemake(new_workdir(tmp_path / "wd"), "-n", "--cores", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    for rule in ("toy_data", "toy_tokenizers", "toy_vae", "toy_text_clip", "toy_model_sd", "toy_model_flux",
                 "toy_reader", "toy_judge", "toy_quality"):
        assert rule in out
    assert not (tmp_path / "wd/results").exists()


@pytest.mark.slow
def test_tiny_toy_world_builds_end_to_end_and_reruns_nothing(tiny_study):
    wd = tiny_study
    cfg = str(TINY_CONFIG)
    quality = json.loads((wd / "results/toy/quality.json").read_text())
    assert set(quality["models"]) == {"toy-sd", "toy-flux"}
    for figures in quality["models"].values():
        for key in ("color_acc", "shape_acc", "prompt_fidelity"):
            assert 0.0 <= figures[key] <= 1.0
        assert figures["n_images"] == 20
        # The subject-transplant probe: a share per layer of the ReFACT encoder, for both replace tasks.
        binding = figures["subject_binding"]
        assert set(binding) == {"circle-to-blue", "king-as-triangle"}
        for row in binding.values():
            assert row["transplant_after_layer"] and all(0 <= v <= 1 for v in row["transplant_after_layer"].values())
    assert 0 <= quality["reader_accuracy"] <= 1 and 0 <= quality["judge_two_way_accuracy"] <= 1
    assert quality["build_wall_s_total"] > 0
    for rule in ("toy_data", "toy_model_sd", "toy_quality"):
        assert list((wd / "benchmarks/toy").glob("*.tsv")), rule
    assert (wd / "results/toy/fidelity_toy-sd.png").stat().st_size > 0
    # The given config replaced the default one: only its editor and task ran.
    assert sorted(p.name for p in (wd / "results/states/toy-sd/edit").iterdir()) == ["uce"]
    assert sorted(p.name for p in (wd / "results/states/toy-sd/edit/uce").iterdir()) == ["appearance"]
    # Fine-tuned states: the shared control from the base, and one per edited state, once per
    # fine-tune seed (LoRA has two here), each seed's training record saying which it was.
    for start in ("base", "edit/uce/appearance/circle-to-blue"):
        ft = wd / f"results/states/toy-sd/{start}/ft"
        for seed in (0, 1):
            assert (ft / f"lora/sks-square/seed{seed}/pytorch_lora_weights.safetensors").is_file()
            record = json.loads((ft / f"lora/sks-square/seed{seed}/finetune.json").read_text())
            assert record["steps"] == 2 and len(record["loss_curve"]) == 2 and record["config"]["seed"] == seed
            # Snapshots (for the curves) on the first seed only.
            assert [p.name for p in (ft / f"lora/sks-square/seed{seed}").glob("snapshot_*")] == \
                (["snapshot_1.safetensors"] if seed == 0 else [])
        assert sorted(p.name for p in (ft / "dreambooth/sks-square").glob("seed*")) == ["seed0"]
        # toy-flux's entry overrides the LoRA steps; toy-sd keeps the block's.
        flux_ft = wd / f"results/states/toy-flux/{start}/ft/lora/sks-square/seed0"
        assert json.loads((flux_ft / "finetune.json").read_text())["steps"] == 3
        assert (ft / "dreambooth/sks-square/seed0/delta.safetensors").is_file()
        assert (ft / "dreambooth/sks-square/seed0/snapshot_1.safetensors").is_file()
    # The built models load like any real model.
    from editpersist.families import get_family

    flux = get_family("flux").load(wd / "resources/toy/models/toy-flux")
    assert type(flux).__name__ == "FluxPipeline"
    # toy.flux.t5_layers (3 in the tiny config; the library's own default is 2) sets the toy T5,
    # and the probe transplants after each of its layers.
    assert len(flux.text_encoder_2.encoder.block) == 3
    assert len(quality["models"]["toy-flux"]["subject_binding"]["circle-to-blue"]["transplant_after_layer"]) == 3
    _check_study_outputs(wd)
    again = run_snakemake(wd, "-n", "--cores", "2", "--configfile", cfg)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def _check_study_outputs(wd: Path) -> None:
    """The persistence table covers every cell of the tiny grid, with the contract's columns."""
    import pandas as pd

    table = pd.read_csv(wd / "results/persistence.csv")
    # A row with nothing to note has note "": CSV writes it as an empty cell, which pandas reads
    # back as missing; restore the text it was, so the table can equal the parquet copy.
    table["note"] = table["note"].fillna("")
    assert list(table.columns) == ["model", "family", "editor", "task", "edit", "finetuner", "ft_data", "relation",
                                   "metric", "base", "edited", "base_ft", "edited_ft", "retention", "ci_low",
                                   "ci_high", "n_images", "effect", "effect_ci_low", "effect_ci_high", "n_seeds",
                                   "replicates_dropped", "note", "ft_fidelity", "target_reach"]
    cells = table[["model", "editor", "task", "edit", "finetuner", "ft_data"]].drop_duplicates()
    assert len(cells) == 2 * 1 * 1 * 2  # models x editors x edits x fine-tuners (one subject)
    assert set(table["metric"]) == {"efficacy", "generality", "specificity", "specificity_preserved", "clip_score",
                                    "fd_judge", "kd_judge", "caption_accuracy"}
    for col in ("base", "edited", "base_ft", "edited_ft", "n_images", "effect", "n_seeds", "replicates_dropped"):
        assert table[col].notna().all(), col
    assert (table["n_seeds"] == table["finetuner"].map({"lora": 2, "dreambooth": 1})).all()
    assert table["ft_fidelity"].between(0, 1).all()
    assert table["target_reach"].between(0, 1).all()  # the appearance edit's "a blue circle", generated and read
    # The CSV keeps 6 significant digits of each value.
    gap = (table["effect"] - (table["edited"] - table["base"])).abs()
    assert (gap <= 1e-5 * (table["edited"].abs() + table["base"].abs()) + 1e-12).all()
    # A retention is stated exactly where the effect is established (and goes the way the metric
    # calls better, on some fine-tune seed kept), and a note says why not elsewhere.
    unstated = table["note"].str.contains("not established|no interval|retention not stated")
    assert (table["retention"].isna() == unstated).all()
    pd.testing.assert_frame_equal(pd.read_parquet(wd / "results/persistence.parquet"), table, check_dtype=False)
    # Each seed's own retention: one row per cell, metric and fine-tune seed, stated where the
    # cell's is, and the cell's the mean of its kept seeds'.
    by_seed = pd.read_csv(wd / "results/persistence_by_seed.csv")
    assert list(by_seed.columns) == ["model", "editor", "task", "edit", "finetuner", "ft_data", "metric", "seed",
                                     "base_ft", "edited_ft", "retention", "ft_fidelity", "target_reach", "kept"]
    assert len(by_seed) == table["finetuner"].map({"lora": 2, "dreambooth": 1}).sum()
    keys = ["model", "editor", "task", "edit", "finetuner", "ft_data", "metric"]
    kept = by_seed[by_seed["kept"]].groupby(keys)["retention"].mean()
    stated = table.set_index(keys)["retention"].dropna()
    assert np.allclose(kept.reindex(stated.index), stated, rtol=1e-5)
    assert (wd / "results/summary.md").read_text().startswith("# editpersist summary")
    curves = pd.read_csv(wd / "results/curves.csv")
    assert set(curves.loc[curves["finetuner"] == "dreambooth", "step"]) == {0, 1, 2}  # start, snapshot, end
    assert set(curves.loc[curves["finetuner"] == "lora", "n_seeds"]) == {1}  # the seed with snapshots
    assert set(pd.read_csv(wd / "results/reedit.csv")["finetuner"]) == {"lora"}
    assert set(pd.read_csv(wd / "results/transfer.csv")["finetuner"]) == {"lora"}
    assert set(pd.read_csv(wd / "results/judge_validity.csv")["task"]) == {"appearance", "subject"}
    assert (pd.read_csv(wd / "results/finetune_quality.csv")["kind"] == "base_ft").sum() == 2 * (2 + 1)
    weights = pd.read_csv(wd / "results/weights.csv")
    assert (weights["module"] == "(all)").sum() == 2 * (2 + 1)  # models x (lora seeds + dreambooth seed)
    assert weights["control_share_removed"].notna().any()
    manifest = pd.read_parquet(wd / "results/images/toy-sd/base/all/manifest.parquet")
    assert {"prompt", "seed", "state", "path", "steps", "guidance", "scheduler"} <= set(manifest.columns)
    for plot in ("retention_heatmap.png", "retention_curves.png", "weights_vs_retention.png"):
        assert (wd / "results/plots" / plot).stat().st_size > 0
    assert len(list((wd / "results/plots/grids").glob("*.png"))) == 2
    # A forest plot per model and task that states a retention.
    stated = table[(table["metric"] == table["task"].map(PRIMARY)) & table["retention"].notna()]
    assert {p.stem for p in (wd / "results/plots/forest").glob("*.png")} == (
        {f"{m}.{t}" for m, t in zip(stated["model"], stated["task"])} or {"none"})


def test_rules_are_formatted_with_snakefmt():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow/rules"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_lint_passes():
    res = run_snakemake(ROOT, "--lint")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
