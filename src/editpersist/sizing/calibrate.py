"""Utilisation per job kind measured by a pilot run (config/pilot.yaml) on the user's GPU.

For each GPU job the pilot ran, Snakemake's benchmark file gives its wall seconds `s`; the
sizing gives its FLOPs and the time it spends outside the GPU's arithmetic (process start,
checkpoint load, image I/O). The utilisation a job kind reached is

    u = sum of FLOPs / (peak FLOP rate x sum of (s - fixed seconds))

over the kind's jobs (a FLOP-weighted mean, so the long jobs the grid is made of dominate).
A job whose fixed seconds exceed its measured time says nothing about the GPU's rate and is
left out. class_images, which the pilot does not run, takes generation's figure (the same
pipeline call). The result is written for `sizing.calibration`.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from ..errors import InputError
from ..io import write_json
from .settings import sizing_settings

# A job kind the pilot does not run, and the measured kind that stands in for it.
STAND_INS = {"class_images": "generate", "score_chunk": "score"}


def benchmark_seconds(path: Path) -> float:
    """The wall seconds of Snakemake's benchmark file (its `s` column, first repeat)."""
    with path.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise InputError(f"{path}: not a Snakemake benchmark file (no 's' column)")
    return float(rows[0]["s"])


def measured_utilisation(rows: list[dict], seconds: dict[tuple[str, str], float], peak_tflops: float,
                         overhead_s: float) -> dict[str, dict]:
    """{kind: {utilisation, jobs, skipped}} from sized rows and measured seconds per (rule, job)."""
    flops, busy, jobs, skipped = defaultdict(float), defaultdict(float), defaultdict(int), defaultdict(int)
    for r in rows:
        s = seconds.get((r["rule"], r["job"]))
        if s is None or not r.get("gpu"):
            continue
        fixed = overhead_s + float(r["load_s"]) + float(r["io_s"])
        if s <= fixed or float(r["tflops"]) <= 0:
            skipped[r["rule"]] += 1
            continue
        flops[r["rule"]] += float(r["tflops"])
        busy[r["rule"]] += s - fixed
        jobs[r["rule"]] += 1
    out = {k: {"utilisation": round(min(1.0, flops[k] / (peak_tflops * busy[k])), 4), "jobs": jobs[k],
               "skipped": skipped[k]} for k in flops}
    for kind, stand_in in STAND_INS.items():
        if kind not in out and stand_in in out:
            out[kind] = {**out[stand_in], "from": stand_in}
    return out


def calibrate(configfile: Path, benchmarks: Path, out: Path) -> dict:
    """Size the pilot's config, read its benchmark files, write the calibration file."""
    from .report import size_config
    from ..config import read_config

    settings = sizing_settings(read_config(configfile))
    size_config(configfile, None, Path("results/bench"))
    with open(Path("results/bench") / f"size_{configfile.stem}.csv") as f:
        rows = [{**r, "gpu": int(r["gpu"])} for r in csv.DictReader(f)]
    seconds = {}
    for r in rows:
        path = benchmarks / r["rule"] / f"{r['job']}.tsv"
        if r["gpu"] and path.is_file():
            seconds[(r["rule"], r["job"])] = benchmark_seconds(path)
    if not seconds:
        raise InputError(f"{benchmarks}: no benchmark file of any GPU job of {configfile} (run the pilot first)")
    kinds = measured_utilisation(rows, seconds, settings.gpu.peak_tflops, settings.job_overhead_s)
    result = {"gpu": settings.gpu.name, "config": str(configfile), "benchmarks": str(benchmarks),
              "utilisation": {k: v["utilisation"] for k, v in sorted(kinds.items())}, "detail": kinds}
    write_json(out, result)
    return result
