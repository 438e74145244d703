"""Models named by a Hub id and a pinned commit, read from a cache laid out as huggingface_hub
lays it out (blobs, snapshot symlinks, refs), offline."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from conftest import TINY_CONFIG, new_workdir, run_snakemake
from editpersist.config import with_overrides
from editpersist.errors import ConfigError
from editpersist.hub import IGNORED, is_cached, resolve_hub_models, snapshot_dir

REPO = "example-org/tiny-sd"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_cache_of(model_dir: Path, cache: Path, repo_id: str = REPO, revision: str = REVISION) -> Path:
    """`model_dir` as huggingface_hub caches a download of it: each file once in blobs/ (named by
    its hash), the revision's snapshot a tree of relative symlinks to them, refs/main the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    for src in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        blob = repo / "blobs" / hashlib.sha256(src.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(src.read_bytes())
        link = snapshot / src.relative_to(model_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


@pytest.fixture(scope="module")
def cache(tiny_model_dirs, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    hub_cache_of(tiny_model_dirs["sd"], root)
    return root


def test_the_test_cache_is_the_layout_huggingface_hub_reads(cache):
    from huggingface_hub import snapshot_download

    found = snapshot_download(REPO, revision=REVISION, cache_dir=cache, local_files_only=True)
    assert Path(found) == snapshot_dir(cache, REPO, REVISION) and is_cached(Path(found))
    assert not is_cached(snapshot_dir(cache, REPO, "f" * 40))


def test_a_hub_entry_reads_its_snapshot_and_refuses_one_it_may_not_fetch(cache, tmp_path):
    config = {"hub_cache": str(cache), "models": [{"name": "m", "family": "sd", "hub": REPO, "revision": REVISION}]}
    assert resolve_hub_models(config) == [] and config["models"][0]["path"] == str(snapshot_dir(cache, REPO, REVISION))
    other = {"hub_cache": str(tmp_path), "models": [{"name": "m", "family": "sd", "hub": REPO, "revision": REVISION}]}
    with pytest.raises(ConfigError, match=rf"^models\[0\]\.hub: {REPO} at revision {REVISION} is not in the cache"):
        resolve_hub_models(dict(other, models=[dict(other["models"][0])]))
    assert resolve_hub_models(dict(other, allow_download=True)) == ["m"]


def test_only_the_pipeline_s_safetensors_and_configs_would_be_fetched():
    """What download_snapshot skips: other weight formats and variants of the weights it loads."""
    from fnmatch import fnmatch

    skipped = ["unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.safetensors",
               "unet/diffusion_pytorch_model.non_ema.safetensors", "sd-v1-4.ckpt", "text_encoder/flax_model.msgpack"]
    kept = ["unet/diffusion_pytorch_model.safetensors", "text_encoder_2/model-00001-of-00002.safetensors",
            "tokenizer_2/spiece.model", "scheduler/scheduler_config.json", "model_index.json"]
    assert all(any(fnmatch(f, p) for p in IGNORED) for f in skipped)
    assert not any(fnmatch(f, p) for f in kept for p in IGNORED)


def _hub_config(tmp_path: Path, cache: Path, **extra) -> Path:
    """The tiny study with a third model, a Hub snapshot of the tiny SD pipeline."""
    cfg = with_overrides(yaml.safe_load(TINY_CONFIG.read_text()), {
        "hub_cache": str(cache), "evaluation.scorer": "judge",
        "models.2": {"name": "hubsd", "family": "sd", "hub": REPO, "revision": REVISION}, **extra})
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_config_naming_a_hub_id_plans_offline_against_the_cache_and_stops_without_it(cache, tmp_path):
    planned = run_snakemake(new_workdir(tmp_path / "a"), "-n", "--cores", "1", "--configfile",
                            str(_hub_config(tmp_path, cache)))
    assert planned.returncode == 0, planned.stderr
    snapshot = str(snapshot_dir(cache, REPO, REVISION))
    assert f"input: {snapshot}" in planned.stdout and "rule download_model:" not in planned.stdout
    # Without the cache: one line naming the key and the id, before any job.
    (tmp_path / "empty").mkdir()
    refused = run_snakemake(new_workdir(tmp_path / "b"), "-n", "--cores", "1", "--configfile",
                            str(_hub_config(tmp_path, tmp_path / "empty")))
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 1 and len(lines) == 1, refused.stderr
    assert lines[0].startswith(f"editpersist: models[2].hub: {REPO} at revision {REVISION} is not in the cache")
    # Downloads allowed: the plan fetches the snapshot first (here only planned: no network).
    fetching = run_snakemake(new_workdir(tmp_path / "c"), "-n", "--cores", "1", "--configfile",
                             str(_hub_config(tmp_path, tmp_path / "empty", allow_download=True)))
    assert fetching.returncode == 0, fetching.stderr
    assert "rule download_model:" in fetching.stdout
    assert f"output: {snapshot_dir(tmp_path / 'empty', REPO, REVISION)}" in fetching.stdout


def test_the_download_job_refuses_without_leave_and_fails_in_one_line_offline(tmp_path, monkeypatch):
    from editpersist.errors import InputError
    from editpersist.hub import download_snapshot

    with pytest.raises(ConfigError, match=f"allow_download: false, so {REPO} cannot be fetched"):
        download_snapshot(REPO, REVISION, tmp_path, allow=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match=rf"^{REPO} at revision {REVISION}: download failed \("):
        download_snapshot(REPO, REVISION, tmp_path, allow=True)
    assert not snapshot_dir(tmp_path, REPO, REVISION).exists()
