"""The sizing as the workflow uses it: Snakemake's dry run asks each real model's job for its
sized resources, `bench size` has a row for every job of that dry run, and a job that cannot fit
stops the plan with one line. The shipped footprints make these dry runs trace nothing."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from editpersist.config import resolve_extends
from editpersist.sizing.report import size_config
from editpersist.sizing.settings import sizing_settings

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _config(name: str, tmp_path: Path, **sizing) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / name).read_text())
    if "extends" in cfg:
        resolve_extends(cfg)
    cfg["sizing"] = {**cfg.get("sizing", {}), **sizing}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _dry_run(configfile: Path, cwd: Path) -> subprocess.CompletedProcess:
    (cwd / "config").symlink_to(ROOT / "config")
    return subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n",
                           "--cores", "1", "--configfile", str(configfile)], cwd=cwd, capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def test_the_pilot_is_sized_job_for_job_as_its_dry_run_plans_it(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = ROOT / "config/pilot.yaml"
    summary = size_config(config, None, tmp_path)
    rows = _rows(tmp_path / "size_pilot.csv")
    assert summary["jobs"] == len(rows) == 51
    gpu = [r for r in rows if r["gpu"] == "1"]
    assert {r["rule"] for r in gpu} == {"edit", "reedit", "layer_stats", "finetune", "generate", "score"}
    for r in gpu:
        assert int(r["planned_runtime_min"]) == int(r["runtime_min"]) > 0
        assert int(r["planned_gpu_mem_mb"]) == 1024 * int(r["mem_gb_requested"])
        assert float(r["peak_gb"]) * 1.1 <= 80
        assert float(r["tflops"]) > 0


def test_two_paper_jobs_are_planned_with_their_sizing_and_every_job_fits(tmp_path, monkeypatch):
    """SDXL's DreamBooth fine-tune (the largest peak) and SD 1.4's base images: the runtime and GPU
    memory Snakemake's dry run printed for them are the sizing table's; no job passes 80 GB."""
    monkeypatch.chdir(ROOT)
    summary = size_config(ROOT / "config/paper.yaml", None, tmp_path)
    rows = {(r["rule"], r["job"]): r for r in _rows(tmp_path / "size_paper.csv")}
    assert summary["jobs"] == len(rows)
    # No job asks for more than the maximum wall time: the long scoring and generation jobs are
    # split into chunks sized to fit it.
    gpu = [r for r in rows.values() if r["gpu"] == "1"]
    assert {r["rule"] for r in gpu} >= {"score_chunk", "generate_chunk"}
    assert max(int(r["planned_runtime_min"]) for r in gpu) <= 24 * 60
    assert summary["over_max_wall"] == 0
    for key in (("finetune", "sdxl/edit/uce/role/planned-001/dreambooth/teapot"), ("generate", "sd14/base/all")):
        row = rows[key]
        assert int(row["planned_runtime_min"]) == int(row["runtime_min"]) > 0
        assert int(row["planned_gpu_mem_mb"]) == 1024 * int(row["mem_gb_requested"]) > 0
    settings = sizing_settings(yaml.safe_load((ROOT / "config/paper.yaml").read_text()))
    assert summary["max_peak_gb"] * settings.memory_safety <= settings.gpu.memory_gb


def test_a_job_that_cannot_fit_stops_the_plan_with_one_line(tmp_path):
    res = _dry_run(_config("pilot.yaml", tmp_path, gpu={"name": "small", "peak_tflops": 100.0, "memory_gb": 10.0}),
                   tmp_path)
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "planning only" not in ln]
    assert len(lines) == 1
    assert lines[0].startswith("editpersist: ") and "exceeds the GPU's 10 GB (sizing.gpu.memory_gb)" in lines[0]
    assert not (tmp_path / "results").exists()
