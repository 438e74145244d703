"""Shared fixtures: tiny random-weight pipelines of every family, built on the fly.

Nothing is downloaded and no weights are committed: the architectures are the rehearsal's
(editpersist.rehearsal), the tokenizers and schedulers the toy world's offline ones, the
models are random and a few hundred KB.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)

from editpersist.toy.build import training_sentences  # noqa: E402
from editpersist.toy.tokenizers import build_clip_tokenizer, build_t5_tokenizer  # noqa: E402
from editpersist.toy.world import WorldSpec, sample_captions  # noqa: E402


def make_cell(model, family, editor, case, finetuner, subject, relation, seeds=(0,)):
    """A persistence-table cell of one edit case: its grid cell and what the tables read besides."""
    from editpersist.evaluation.persistence import Cell
    from editpersist.grid import GridCell

    return Cell(GridCell(model, editor, case.task, case.name, finetuner, subject, tuple(seeds)), family, case,
                relation)


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory) -> dict[str, Path]:
    import numpy as np

    root = tmp_path_factory.mktemp("tokenizers")
    spec = WorldSpec()
    build_clip_tokenizer(spec.words(), root / "clip", model_max_length=16)
    samples = sample_captions(spec, 500, np.random.default_rng(0))
    t5 = build_t5_tokenizer(training_sentences(samples, spec), root / "t5", vocab_size=128)
    t5.model_max_length = 12
    t5.save_pretrained(root / "t5")
    return {"clip": root / "clip", "t5": root / "t5"}


def build_tiny(name: str, out: Path, tokenizer_dirs: dict[str, Path], scheduler) -> Path:
    """The family's random miniature (ModelFamily.tiny_pipeline) with the toy world's tokenizers."""
    from transformers import CLIPTokenizer, T5Tokenizer

    from editpersist.families import get_family

    family = get_family(name)
    load = {"clip": CLIPTokenizer, "t5": T5Tokenizer}
    tokenizers = {component: load[kind].from_pretrained(tokenizer_dirs[kind])
                  for component, kind in zip(family.tokenizers, family.tokenizer_kinds)}
    torch.manual_seed(0)
    family.tiny_pipeline(tokenizers, scheduler).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory, tokenizer_dirs) -> dict[str, Path]:
    from editpersist.toy.diffusion import flux_scheduler, sd_schedulers

    root = tmp_path_factory.mktemp("models")
    return {
        "sd": build_tiny("sd", root / "sd", tokenizer_dirs, sd_schedulers()[1]),
        "sdxl": build_tiny("sdxl", root / "sdxl", tokenizer_dirs, sd_schedulers()[1]),
        "flux": build_tiny("flux", root / "flux", tokenizer_dirs, flux_scheduler()),
    }


# ---- the workflow on the tiny toy config ------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "tests/data/tiny_toy.yaml"


def run_snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: int = 1500):
    """`snakemake` on the repository's Snakefile in `workdir`, as a user runs it."""
    import subprocess
    import sys

    env = {**(env or os.environ), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                           str(workdir), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def new_workdir(path: Path) -> Path:
    # The Snakefile's default `configfile:` is read relative to the working directory.
    path.mkdir(parents=True, exist_ok=True)
    (path / "config").symlink_to(ROOT / "config")
    return path


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """The tiny toy world and the study on it, run once with `snakemake --cores 2`: the
    reference that the cluster, resume and determinism tests compare against."""
    wd = new_workdir(tmp_path_factory.mktemp("tiny-study"))
    res = run_snakemake(wd, "--cores", "2", "--configfile", str(TINY_CONFIG))
    assert res.returncode == 0, res.stderr[-5000:]
    (wd / "snakemake.stderr").write_text(res.stderr)
    return wd


def study_without_results(reference: Path, dest: Path) -> Path:
    """A copy of `reference` that keeps the built toy world (same files, times and
    Snakemake records) and nothing of the study, so a run there redoes only the study."""
    import shutil

    shutil.copytree(reference, dest, symlinks=True)
    for top in ("results", "logs", "benchmarks"):
        for path in (dest / top).iterdir():
            if path.name != "toy":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(dest / ".snakemake" / "log", ignore_errors=True)
    return dest
