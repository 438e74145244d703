"""`python -m editpersist.bench size`: every job of a config's dry run with its sized figures.

The dry run is Snakemake's own (`snakemake -n`, with the profile when given), so the table
has a row for exactly the jobs a real run would submit; each GPU job's row is what the
workflow's sizer computed for it while planning (the same object that set its resources),
and the table records the resources the dry run printed beside it, so a reader can check the
two agree. CPU jobs (tables, figures) get a row with their constant resources.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import EditPersistError
from ..io import atomic_path, read_json
from .sizer import FOOTPRINTS_ENV, REPORT_ENV, SHIPPED_FOOTPRINTS, write_csv

ROOT = Path(__file__).resolve().parents[3]


def parse_dry_run(stdout: str) -> list[dict]:
    """Every job of `snakemake -n`'s output: its rule, wildcards (in the rule's order) and resources."""
    jobs, job = [], None
    for line in stdout.splitlines():
        head = re.match(r"^(?:local)?rule (\w+):$", line)
        if head:
            job = {"rule": head.group(1), "wildcards": {}, "resources": {}}
            jobs.append(job)
            continue
        if job is None:
            continue
        body = line.strip()
        if body.startswith("wildcards: "):
            job["wildcards"] = dict(kv.split("=", 1) for kv in body.removeprefix("wildcards: ").split(", "))
        elif body.startswith("resources: "):
            job["resources"] = dict(kv.split("=", 1) for kv in body.removeprefix("resources: ").split(", ") if "=" in kv)
    return jobs


def dry_run(configfile: Path, profile: Path | None, report: Path, footprints: Path) -> tuple[str, float]:
    """Snakemake's dry run of `configfile` in a scratch directory, the sizer writing `report`."""
    with tempfile.TemporaryDirectory() as wd:
        (Path(wd) / "config").symlink_to(ROOT / "config")
        limits = ["--profile", str(profile.resolve())] if profile else ["--cores", "1"]
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", wd, "-n",
               "--configfile", str(configfile.resolve()), *limits]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", REPORT_ENV: str(report), FOOTPRINTS_ENV: str(footprints.resolve())}
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr.strip() or res.stdout.strip()).splitlines()
                 if ln.strip() and "planning only" not in ln]
        raise EditPersistError(f"dry run of {configfile} failed: {lines[-1] if lines else res.returncode}")
    return res.stdout, wall


def merge_rows(jobs: list[dict], sized: list[dict]) -> list[dict]:
    """One row per dry-run job: its sizing where the sizer sized it, and what the dry run asked for."""
    by_key = {(r["rule"], r["job"]): r for r in sized}
    rows = []
    for job in jobs:
        key = "/".join(job["wildcards"].values())
        res = job["resources"]
        row = by_key.get((job["rule"], key), {"rule": job["rule"], "job": key, "peak_gb": 0.0, "tflops": 0.0,
                                               "hours": 0.0, "runtime_min": int(res.get("runtime", 0)),
                                               "mem_gb_requested": 0, "knobs": "-"})
        rows.append({**row, "model": job["wildcards"].get("model", ""), "planned_runtime_min": int(res.get("runtime", 0)),
                     "planned_gpu_mem_mb": int(res.get("gpu_mem_mb", 0)), "planned_mem_mb": int(res.get("mem_mb", 0)),
                     "gpu": int(res.get("gpu", 0))})
    return rows


def mismatches(rows: list[dict]) -> list[str]:
    """Jobs whose planned resources fall short of their sizing (a bug in the rules' wiring)."""
    out = []
    for r in rows:
        if r.get("gpu") and (r["planned_runtime_min"] < r["runtime_min"]
                             or r["planned_gpu_mem_mb"] < 1024 * r["mem_gb_requested"]):
            out.append(f"{r['rule']} {r['job']}")
    return out


def ship_footprints(entries: dict) -> None:
    """Merge footprints into the package's cache, so planning the shipped configs traces nothing."""
    from . import footprint as fp

    shipped = fp.FootprintCache(SHIPPED_FOOTPRINTS)
    shipped.entries.update(entries)
    shipped.save()


def size_config(configfile: Path, profile: Path | None, out_dir: Path, ship: bool = False) -> dict:
    """Write size_<config>.csv and .md under out_dir; return the summary. `ship`: also add the
    footprints the grid read to the package's cache (SHIPPED_FOOTPRINTS)."""
    from .summary import summarise, summary_markdown

    name = configfile.stem
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "sized.json"
        t0 = time.perf_counter()
        stdout, _ = dry_run(configfile, profile, report, out_dir / "footprints.json")
        sized = read_json(report) if report.is_file() else {"rows": [], "footprints": {}}
        wall = time.perf_counter() - t0
    if ship:
        ship_footprints(sized["footprints"])
    jobs = parse_dry_run(stdout)
    rows = merge_rows(jobs, sized["rows"])
    short = mismatches(rows)
    if short:
        raise EditPersistError(f"{len(short)} jobs are planned with less than their sizing, e.g. {short[0]}")
    write_csv(rows, out_dir / f"size_{name}.csv")
    summary = summarise(rows, configfile, wall)
    with atomic_path(out_dir / f"size_{name}.md") as t:
        Path(t).write_text(summary_markdown(summary))
    return summary
