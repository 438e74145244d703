"""Long jobs split into chunks (`chunking:`): how the workflow splits them, and the chunked
study's tables, byte for byte the unsplit study's."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import TINY_CONFIG, new_workdir, run_snakemake, study_without_results
from editpersist.chunking import chunk_count, chunk_names, chunk_of, split_evenly
from editpersist.errors import InputError
from editpersist.evaluation.generation import FINAL, manifest_order, state_prompts
from editpersist.evaluation.prompts import QualityConfig
from editpersist.evaluation.scoring import merge_score_arrays, merge_score_tables
from editpersist.tasks import load_cases


def test_chunks_are_contiguous_as_even_as_can_be_and_within_the_limit():
    assert [chunk_count(n, 3) for n in (1, 3, 4, 6, 7, 8)] == [1, 1, 2, 2, 3, 3]
    assert chunk_count(10**6, None) == 1
    assert split_evenly(list("abcdefgh"), 3) == [list("abc"), list("def"), list("gh")]
    assert split_evenly(list("abcdefg"), 3) == [list("abc"), list("de"), list("fg")]
    assert chunk_names(3) == ["1-of-3", "2-of-3", "3-of-3"]
    assert chunk_of(list("abcdefg"), "2-of-3") == list("de")
    for bad in ("0-of-2", "3-of-2", "2of3", "1-of-9"):
        with pytest.raises(InputError, match=re.escape(repr(bad)) + "|only 7 items"):
            chunk_of(list("abcdefg"), bad)


def test_merged_chunks_point_into_the_joined_features():
    """Quality rows' `feature` is a row of the features matrix: a later chunk's move by the
    features of the chunks before it; -1 (no feature) stays."""
    first = pd.DataFrame({"prompt": ["a", "q1", "q2"], "feature": [-1, 0, 1]})
    second = pd.DataFrame({"prompt": ["q3", "b", "q4"], "feature": [0, -1, 1]})
    table = merge_score_tables([first, second], [2, 2])
    assert table["feature"].tolist() == [-1, 0, 1, 2, -1, 3]
    assert table["feature"].dtype == first["feature"].dtype
    # Per-image arrays (every chunk has them) are joined; the first chunk's reference is kept.
    chunks = [{"features": np.array([[1.0], [2.0]]), "reference": np.array([[9.0]])},
              {"features": np.array([[3.0], [4.0]])}]
    arrays = merge_score_arrays(chunks)
    assert list(arrays) == ["features", "reference"]
    np.testing.assert_array_equal(arrays["features"][table["feature"][table["feature"] >= 0]].ravel(), [1, 2, 3, 4])
    np.testing.assert_array_equal(arrays["reference"], [[9.0]])


def test_gathered_manifest_rows_follow_the_whole_jobs_order():
    """Member by member, snapshots (ascending) before the final images, prompts in the order
    they are made: the snapshot's order ("c" first) is not the final images' ("b" first)."""
    counts, curve, members = {"b": 1, "c": 2}, {"c": 1, "b": 1}, ["s0", "s1"]
    whole = [("s0", 3, "c", 0), ("s0", 3, "b", 0), ("s0", 5, "c", 0), ("s0", 5, "b", 0), ("s0", FINAL, "b", 0),
             ("s0", FINAL, "c", 0), ("s0", FINAL, "c", 1), ("s1", 3, "c", 0), ("s1", 3, "b", 0), ("s1", FINAL, "b", 0),
             ("s1", FINAL, "c", 0), ("s1", FINAL, "c", 1)]
    shuffled = [whole[i] for i in np.random.default_rng(0).permutation(len(whole))]
    manifest = pd.DataFrame(shuffled, columns=["state", "step", "prompt", "index"])
    ordered = manifest.iloc[manifest_order(manifest, members, counts, curve)]
    assert list(ordered.itertuples(index=False, name=None)) == whole


def planned_jobs(stdout: str) -> list[dict[str, str]]:
    """The jobs of `snakemake -n`'s listing: rule, and each `key: value` line of its block."""
    return [{"rule": m.group(1), **dict(line.strip().split(": ", 1) for line in m.group(2).splitlines())}
            for m in re.finditer(r"^rule (\w+):\n((?:    .*: .*\n)*)", stdout, re.M)]


def tiny_prompts() -> int:
    """Prompts of the tiny study's prompt sets: `all` and its one edit case's set are the same."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    ev = config["evaluation"]
    return len(state_prompts(load_cases(config["tasks"])["appearance"], QualityConfig(**ev["quality"]),
                             ev["images_per_prompt"], ev["images_per_source"]))


def chunked_config(path: Path) -> Path:
    """The tiny study split: 8 generation directories a model, 3 a score job (3 + 3 + 2); as many
    prompts a generation job as a prompt set has, so only a fine-tuned group's sets, one prompt
    longer (its subject's, "a sks square"), are split in two."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    chunking = {"score_dirs": 3, "generate_prompts": tiny_prompts()}
    path.write_text(yaml.safe_dump({**config, "chunking": chunking}, sort_keys=False))
    return path


def test_tiny_grid_splits_where_hand_counting_says(tmp_path):
    wd = new_workdir(tmp_path / "wd")
    res = run_snakemake(wd, "-n", "--cores", "2", "--configfile", str(chunked_config(tmp_path / "chunked.yaml")))
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = planned_jobs(res.stdout)
    images = "results/images/toy-sd"
    edited = f"{images}/edit/uce/appearance/circle-to-blue"
    # generation_targets' order: the base and its fine-tunes (prompt set all), then the edited
    # state, its LoRA fine-tune, the re-edit and transfer of it (evaluation.reedit/transfer:
    # lora), its DreamBooth fine-tune (prompt set appearance.circle-to-blue).
    key = "appearance.circle-to-blue"
    dirs = [f"{images}/base/all", *(f"{images}/base/ft/{ft}/sks-square/all" for ft in ("lora", "dreambooth")),
            f"{edited}/{key}", f"{edited}/ft/lora/sks-square/{key}", f"{edited}/ft/lora/sks-square/reedit/{key}",
            f"{edited}/transfer/lora/sks-square/{key}", f"{edited}/ft/dreambooth/sks-square/{key}"]
    score_chunks = {j["wildcards"]: j["input"].split(", ") for j in jobs if j["rule"] == "score_chunk"}
    judge = ["resources/toy/judge", "resources/toy/reader"]
    assert score_chunks["model=toy-sd, chunk=1-of-3"] == dirs[:3] + judge
    assert score_chunks["model=toy-sd, chunk=2-of-3"] == dirs[3:6] + judge
    assert score_chunks["model=toy-sd, chunk=3-of-3"] == dirs[6:] + judge
    assert len(score_chunks) == 6
    score = next(j for j in jobs if j["rule"] == "score" and j["wildcards"] == "model=toy-sd")
    assert score["input"].split(", ") == [f"results/scores/toy-sd_chunk-{c}{suffix}" for suffix in
                                          (".parquet", ".features.npz") for c in ("1-of-3", "2-of-3", "3-of-3")]
    # The base and the edited state: one generate job each, which loads the model (and the edit);
    # a fine-tuned group: two generate_chunk jobs, gathered by its generate job.
    model = "resources/toy/models/toy-sd"
    delta = "results/states/toy-sd/edit/uce/appearance/circle-to-blue.safetensors"
    unsplit = {dirs[0]: [model], dirs[3]: [model, delta]}
    gathers = {j["output"]: j["input"].split(", ") for j in jobs if j["rule"] == "generate"}
    for d in dirs:
        assert gathers[d] == unsplit.get(d, [f"{d}_chunk-1-of-2", f"{d}_chunk-2-of-2"]), d
    assert sum(j["rule"] == "generate_chunk" for j in jobs) == 2 * 2 * 6


@pytest.mark.slow
def test_chunked_study_gives_the_unsplit_tables_byte_for_byte(tiny_study, tmp_path):
    """The tiny study again, scored and generated in chunks: the same score tables, features,
    images and persistence table as the unsplit reference run."""
    from test_cluster import images_of

    wd = study_without_results(tiny_study, tmp_path / "chunked")
    res = run_snakemake(wd, "results/persistence.csv", "--cores", "2", "--configfile",
                        str(chunked_config(tmp_path / "chunked.yaml")))
    assert res.returncode == 0, res.stderr[-5000:]
    # The chunk jobs ran (their benchmarks), and the generation chunks were removed once gathered.
    assert len(list((wd / "benchmarks/score").glob("*_chunk-*.tsv"))) == 6
    assert len(list((wd / "benchmarks/generate").rglob("*_chunk-*.tsv"))) == 24
    assert not list((wd / "results/images").rglob("*_chunk-*"))
    for model in ("toy-sd", "toy-flux"):
        for suffix in (".parquet", ".features.npz"):
            name = f"results/scores/{model}{suffix}"
            assert (wd / name).read_bytes() == (tiny_study / name).read_bytes(), name
    assert (wd / "results/persistence.csv").read_bytes() == (tiny_study / "results/persistence.csv").read_bytes()
    manifests = sorted((wd / "results/images").rglob("manifest.parquet"))
    assert len(manifests) == 16
    for m in manifests:
        assert m.read_bytes() == (tiny_study / m.relative_to(wd)).read_bytes(), m
    assert images_of(wd) == images_of(tiny_study)


def test_the_fewest_chunks_that_fit_a_cap():
    """Items of 5, 1, 1, 1, 1, 5 images in contiguous even runs: one chunk holds 14, two hold
    7 each, so a cap of 7 needs 2 and a cap of 6 needs 3 (5+1, 1+1, 1+5); a cap no single item
    fits gives every item its own chunk."""
    from editpersist.chunking import fewest_chunks, split_evenly

    images = [5, 1, 1, 1, 1, 5]

    def largest(k):
        return max(sum(part) for part in split_evenly(images, k))

    assert [fewest_chunks(6, largest, cap) for cap in (14, 7, 6, 4)] == [1, 2, 3, 6]
