"""The tiny study on a real SLURM cluster, after SIGKILLs, and with a damaged input file.

All three start from the reference run (`tiny_study`: the toy world and the study run
with `snakemake --cores 2`) with the study's results removed, so each redoes the study
alone, and each compares what it gets with the reference.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY_CONFIG, run_snakemake, study_without_results
from slurm_cluster import CLUSTER_NAME, PARTITION, LocalSlurm, SlurmUnavailable, _left_by_a_dead_harness

# Rules of the study (the toy world is already built in every copy).
STUDY_RULES = ("edit", "reedit", "class_images", "finetune", "generate", "score", "persistence", "weights", "figures")


def images_of(workdir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted((workdir / "results/images").rglob("*.png"))}


def assert_same_study(run: Path, reference: Path) -> None:
    """Same persistence table, byte for byte, and the same images."""
    for table in ("persistence.csv", "curves.csv", "reedit.csv", "transfer.csv"):
        assert (run / "results" / table).read_bytes() == (reference / "results" / table).read_bytes(), table
    assert images_of(run) == images_of(reference)


# ---- SLURM ------------------------------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_a_dead_harness_leaves_a_default_config_link_that_may_be_replaced(tmp_path):
    def harness_link(name: str, controller_pid: int | None, cluster: str = CLUSTER_NAME) -> Path:
        root = tmp_path / name
        root.mkdir()
        (root / "slurm.conf").write_text(f"ClusterName={cluster}\nSlurmctldHost=node\n")
        if controller_pid is not None:
            (root / "slurmctld.pid").write_text(f"{controller_pid}\n")
        link = tmp_path / f"{name}.link"
        link.symlink_to(root / "slurm.conf")
        return link

    dangling = tmp_path / "dangling.link"
    dangling.symlink_to(tmp_path / "gone" / "slurm.conf")
    assert _left_by_a_dead_harness(dangling)
    assert _left_by_a_dead_harness(harness_link("killed", dead_pid()))
    assert _left_by_a_dead_harness(harness_link("never-started", None))
    assert not _left_by_a_dead_harness(harness_link("running", os.getpid()))
    assert not _left_by_a_dead_harness(harness_link("site", dead_pid(), cluster="site-cluster"))
    real = tmp_path / "real.conf"
    real.write_text(f"ClusterName={CLUSTER_NAME}\n")
    assert not _left_by_a_dead_harness(real)


def slurm_overrides() -> list[str]:
    """The CI cluster: one node, no accounts, no GPUs, a few GB per job. Replaces the
    profile's placeholders and its GPU requests (set-resources)."""
    per_rule = [f"{rule}:{key}" for rule in STUDY_RULES for key in ("gpu=0", "mem_mb=2000", "runtime=30")]
    return ["--slurm-no-account", "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
            "--seconds-between-status-checks", "3", "--jobs", "4",
            "--default-resources", f"slurm_partition={PARTITION}", "mem_mb=2000", "runtime=30",
            "--set-resources", *per_rule]


@pytest.mark.slow
def test_slurm_run_of_the_tiny_grid_equals_the_local_run(tiny_study, tmp_path):
    workdir = study_without_results(tiny_study, tmp_path / "slurm-run")
    try:
        cluster = LocalSlurm(tmp_path / "cluster")
        cluster.start()
    except SlurmUnavailable as e:
        cluster.stop()
        pytest.fail(f"the one-node SLURM cluster did not start: {e}")
    try:
        res = run_snakemake(workdir, "--profile", str(ROOT / "profiles/slurm"), "--configfile", str(TINY_CONFIG),
                            *slurm_overrides(), env=cluster.env())
        jobs = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%j %T"], env=cluster.env(), capture_output=True,
                              text=True).stdout
    finally:
        cluster.stop()
    assert res.returncode == 0, res.stderr[-5000:]
    assert "Submitted batch job" in res.stdout + res.stderr or "SLURM jobid" in res.stdout + res.stderr
    assert jobs.count("COMPLETED") >= len(STUDY_RULES), jobs
    assert_same_study(workdir, tiny_study)


# ---- resume after SIGKILL ---------------------------------------------------------------


def running_outputs(workdir: Path) -> list[str]:
    """Outputs Snakemake has marked incomplete: the jobs running now (or killed mid-way)."""
    root = workdir / ".snakemake/incomplete"
    out = []
    for marker in root.rglob("*") if root.is_dir() else []:
        if marker.is_file() and marker.name != "migration_underway":
            encoded = "".join(part.lstrip("@") for part in marker.relative_to(root).parts)
            out.append(base64.urlsafe_b64decode(encoded).decode())
    return out


def kill_when_running(workdir: Path, fragment: str, timeout: float = 900) -> str:
    """Start the study, SIGKILL Snakemake and all its jobs once a job whose output contains
    `fragment` has run for a moment; return that output."""
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
                             "--directory", str(workdir), "--cores", "2", "--configfile", str(TINY_CONFIG),
                             "--rerun-incomplete"],
                            cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            hits = [o for o in running_outputs(workdir) if fragment in o]
            if hits:
                time.sleep(2.0)  # past the imports, into the job's work
                return hits[0]
            if proc.poll() is not None:
                raise AssertionError(f"the workflow ended (exit {proc.returncode}) before a {fragment} job ran")
            time.sleep(0.2)
        raise AssertionError(f"no job writing {fragment!r} started within {timeout} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_killed_workflow_resumes_to_the_same_table(tiny_study, tmp_path):
    workdir = study_without_results(tiny_study, tmp_path / "resumed")
    for fragment in ("/ft/", "results/images/"):
        killed = kill_when_running(workdir, fragment)
        # The killed job's output is absent (atomic writes) or still marked incomplete.
        assert not (workdir / killed).exists() or killed in running_outputs(workdir), killed
        assert run_snakemake(workdir, "--unlock", "--configfile", str(TINY_CONFIG)).returncode == 0
    res = run_snakemake(workdir, "--cores", "2", "--configfile", str(TINY_CONFIG), "--rerun-incomplete")
    assert res.returncode == 0, res.stderr[-5000:]
    assert running_outputs(workdir) == []
    # Determinism too: a run in pieces gives the reference's images and tables byte for byte.
    assert_same_study(workdir, tiny_study)


# ---- a damaged input file with --keep-going ---------------------------------------------


@pytest.mark.slow
def test_damaged_model_fails_its_jobs_and_the_rest_completes(tiny_study, tmp_path):
    workdir = study_without_results(tiny_study, tmp_path / "damaged")
    weights = next((workdir / "resources/toy/models/toy-flux/transformer").glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    res = run_snakemake(workdir, "--cores", "2", "--configfile", str(TINY_CONFIG), "--keep-going")
    assert res.returncode != 0
    # toy-sd's half of the grid ran to its scores; nothing downstream of toy-flux exists.
    assert (workdir / "results/scores/toy-sd.parquet").is_file()
    assert not (workdir / "results/scores/toy-flux.parquet").exists()
    assert not (workdir / "results/persistence.csv").exists()
    # The failed jobs' logs name the damaged file in one error line.
    named = str(weights.relative_to(workdir))
    errors = [line for p in (workdir / "logs").rglob("*.log") if "toy-flux" in str(p)
              for line in p.read_text().splitlines() if " ERROR " in line]
    assert errors and all(named in line for line in errors), errors[:3]
