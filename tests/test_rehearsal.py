"""The rehearsal of the published grid: its builders make folders that load as real models
do, and config/rehearsal.yaml, unchanged, runs from nothing to the table and the report."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, run_snakemake

REHEARSAL = ROOT / "config/rehearsal.yaml"


def test_rehearsal_clip_tokenizer_gives_open_clip_ids(tmp_path):
    """Real SD/SDXL/FLUX folders ship CLIP's own tokenizer: 49,408 tokens, 77 positions; its ids
    must be open_clip's (an independent implementation of the same BPE) on real prompts."""
    import open_clip

    from editpersist.toy.tokenizers import build_full_clip_tokenizer

    tok = build_full_clip_tokenizer(tmp_path / "clip")
    reference = open_clip.get_tokenizer("ViT-L-14")
    prompts = ["Canada's Prime Minister giving a speech", "A bowl of blue bananas", "image of construction worker",
               "digging my own grave, science fiction, Edward Hopper and James Gilleard"]
    ours = tok(prompts, padding="max_length", max_length=77, truncation=True).input_ids
    theirs = reference(prompts)
    for mine, ref in zip(ours, theirs):
        n = mine.index(tok.eos_token_id) + 1
        assert mine[:n] == ref[:n].tolist()
    assert len(tok) == 49408 and tok.model_max_length == 77


@pytest.mark.parametrize("family", ["sd", "sdxl", "flux"])
def test_rehearsal_models_are_model_folders_of_the_real_architecture(tmp_path, family):
    from editpersist.families import get_family
    from editpersist.sampling import SamplingConfig, generate
    from editpersist.rehearsal import build_pipeline

    corpus = ["A banana", "weird and disturbing portrait \U0001faa6 of todd", "image of attendant"]
    build_pipeline(family, corpus, tmp_path / family)
    index = json.loads((tmp_path / family / "model_index.json").read_text())
    scheduler = {"sd": "PNDMScheduler", "sdxl": "EulerDiscreteScheduler", "flux": "FlowMatchEulerDiscreteScheduler"}
    assert index["scheduler"][1] == scheduler[family]
    pipe = get_family(family).load(tmp_path / family)
    images, _ = generate(pipe, get_family(family), ["A banana"], 2, SamplingConfig(steps=2, height=32, width=32))
    assert images.shape == (2, 32, 32, 3) and images.std() > 0
    if family == "flux":  # the T5 tokenizer covers every character of its corpus, emoji included
        ids = pipe.tokenizer_2(corpus[1]).input_ids
        assert pipe.tokenizer_2.unk_token_id not in ids and ids[-1] == pipe.tokenizer_2.eos_token_id
        assert pipe.tokenizer_2.decode(ids, skip_special_tokens=True) == corpus[1]


def test_rehearsal_image_folders_differ_per_seed_and_are_smooth(tmp_path):
    from editpersist.rehearsal import smooth_images

    a, b = smooth_images(3, 16, seed=0), smooth_images(3, 16, seed=1)
    assert a.shape == (3, 16, 16, 3) and not np.array_equal(a, b)
    assert np.array_equal(a, smooth_images(3, 16, seed=0))
    # Bilinear between corner colours: neighbouring pixels differ by at most 255 / 15 per channel.
    assert np.abs(np.diff(a.astype(int), axis=2)).max() <= 255 / 15 + 1


def expected_cells(workdir: Path):
    """The grid's cells as the library defines them from the config (paths resolve in the workdir)."""
    from editpersist.grid import study_cells
    from editpersist.tasks import load_cases

    config = yaml.safe_load(REHEARSAL.read_text())
    here = os.getcwd()
    os.chdir(workdir)
    try:
        cases = load_cases(config["tasks"])
    finally:
        os.chdir(here)
    return study_cells(config, cases), cases


@pytest.mark.slow
def test_rehearsal_runs_the_paper_grid_from_nothing_to_the_report(tmp_path):
    from editpersist.metrics.task_metrics import metrics_of_case

    # The shipped config, unchanged, in its own working directory: its dataset paths
    # (../tests/data/datasets/...) resolve there as they do from the repository's rehearsal/.
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    wd = tmp_path / "rehearsal"
    wd.mkdir()
    res = run_snakemake(wd, "--cores", "2", "--configfile", str(REHEARSAL))
    assert res.returncode == 0, res.stderr[-5000:]

    cells, cases = expected_cells(wd)
    keys = ["model", "editor", "task", "edit", "finetuner", "ft_data"]
    table = pd.read_csv(wd / "results/persistence.csv")
    got = {tuple(r) for r in table[keys].drop_duplicates().itertuples(index=False)}
    assert got == {(c.model, c.editor, c.task, c.edit, c.finetuner, c.subject) for c in cells}
    # Coverage: every family with every editor and every fine-tuner it supports; every task
    # with every editor that supports it.
    assert {(c.model, c.editor) for c in cells} == {(m, e) for m in ("sd", "sdxl", "flux")
                                                   for e in ("uce", "refact", "time")}
    assert {(c.model, c.finetuner) for c in cells} == {(m, f) for m in ("sd", "sdxl")
                                                      for f in ("lora", "dora", "full", "dreambooth")} \
        | {("flux", "lora"), ("flux", "dora")}
    assert {(c.task, c.editor) for c in cells} == {(t, e) for t in ("appearance", "role")
                                                  for e in ("uce", "refact", "time")} \
        | {("debias", "uce"), ("unsafe", "uce")}
    by_key = {(c.task, c.name): c for task_cases in cases.values() for c in task_cases}
    scorer = yaml.safe_load(REHEARSAL.read_text())["evaluation"]["scorer"]
    for key, rows in table.groupby(keys, sort=False):
        assert tuple(rows["metric"]) == metrics_of_case(by_key[(key[2], key[3])], scorer), key
    # NaN only where docs/metrics.md ("The persistence table") says: retention and its interval
    # where the edit's effect is not established or went the wrong way, or the metric has no
    # interval (then the note says why); the effect and its seeds are always there.
    for col in ("base", "edited", "base_ft", "edited_ft", "n_images", "effect", "n_seeds", "replicates_dropped"):
        assert table[col].notna().all(), col
    unstated = table["note"].fillna("").str.contains("not established|no interval|retention not stated")
    for col in ("retention", "ci_low", "ci_high"):
        assert (table[col].isna() == unstated).all(), col
    assert (table["n_seeds"] == table["finetuner"].map({"lora": 2}).fillna(1)).all()  # LoRA runs two seeds

    reedit, transfer = pd.read_csv(wd / "results/reedit.csv"), pd.read_csv(wd / "results/transfer.csv")
    assert set(reedit["finetuner"]) == {"dora"} and set(reedit["model"]) == {"sd", "sdxl", "flux"}
    assert set(transfer["finetuner"]) == {"lora"} and set(transfer["model"]) == {"sd", "sdxl", "flux"}
    assert len(pd.read_csv(wd / "results/curves.csv")) == 3 * len(cells)  # step 0, the snapshot, the end
    weights = pd.read_csv(wd / "results/weights.csv")
    assert (weights["module"] == "(all)").sum() == sum(len(c.seeds) for c in cells)  # one per cell and seed
    assert "## Every cell" in (wd / "results/summary.md").read_text()
    # The debias edit ran its judge-metered loop; ReFACT edited FLUX (its T5 site).
    sidecar = json.loads((wd / "results/states/sd/edit/uce/debias/001-attendant.json").read_text())
    assert len(sidecar["debias_rounds"]) >= 1
    refact = json.loads((wd / "results/states/flux/edit/refact/appearance/001-a-banana.json").read_text())
    assert refact["editor"] == "refact"

    report = run_snakemake(wd, "--cores", "2", "--configfile", str(REHEARSAL), "--report", "report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    assert (wd / "report.html").stat().st_size > 100_000
    html = (wd / "report.html").read_text()
    assert "Every cell, with its interval" in html and "colour: editor, marker: fine-tuner" in html  # forest plots
    again = run_snakemake(wd, "-n", "--cores", "2", "--configfile", str(REHEARSAL))
    assert "Nothing to be done" in again.stdout + again.stderr
