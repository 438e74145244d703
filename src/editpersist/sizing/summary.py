"""The grid's totals from a sizing table, three ways:

* reference figures: the published per-step timings of `bench.costs` (A100 figures scaled to
  the H100 by an assumed factor, an assumed judge time per image);
* sized: every job's FLOPs at the configured utilisation, plus load, I/O and process start;
* physical floor: the FLOPs alone at the GPU's peak rate (utilisation 1), which no run beats.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..config import read_config
from .settings import sizing_settings


def reference_gpu_hours(cfg: dict) -> float:
    from .. import grid
    from ..bench import costs
    from ..tasks import load_cases

    cells = grid.study_cells(cfg, load_cases(cfg["tasks"], planning=True))
    return sum(sum(costs.model_cost(cells, m, cfg).gpu_hours.values()) for m in cfg["models"])


def summarise(rows: list[dict], configfile: Path, wall_s: float) -> dict:
    cfg = read_config(configfile)
    settings = sizing_settings(cfg)
    gpu = [r for r in rows if r.get("gpu")]
    per_rule: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "gpu_hours": 0.0, "floor_hours": 0.0, "max_peak_gb": 0.0,
                                                     "max_hours": 0.0, "knobs": set()})
    for r in gpu:
        s = per_rule[r["rule"]]
        s["jobs"] += 1
        s["gpu_hours"] += r["hours"]
        s["floor_hours"] += r["tflops"] / settings.gpu.peak_tflops / 3600
        s["max_peak_gb"] = max(s["max_peak_gb"], r["peak_gb"])
        s["max_hours"] = max(s["max_hours"], r["hours"])
        if r["knobs"] != "-":
            s["knobs"].add(r["knobs"])
    has_real = bool(gpu)
    return {
        "config": str(configfile), "sizing_wall_s": round(wall_s, 1), "jobs": len(rows), "gpu_jobs": len(gpu),
        "gpu": f"{settings.gpu.name} ({settings.gpu.peak_tflops:g} TFLOP/s, {settings.gpu.memory_gb:g} GB)",
        "gpu_hours_sized": round(sum(r["hours"] for r in gpu), 1),
        "gpu_hours_floor": round(sum(r["tflops"] for r in gpu) / settings.gpu.peak_tflops / 3600, 1),
        "gpu_hours_reference": round(reference_gpu_hours(cfg), 1) if has_real else 0.0,
        "max_peak_gb": round(max((r["peak_gb"] for r in gpu), default=0.0), 1),
        "over_max_wall": sum(r["hours"] > settings.max_wall_hours for r in gpu),
        "per_rule": {k: {**v, "gpu_hours": round(v["gpu_hours"], 1), "floor_hours": round(v["floor_hours"], 2),
                         "max_peak_gb": round(v["max_peak_gb"], 1), "max_hours": round(v["max_hours"], 2),
                         "knobs": sorted(v["knobs"])} for k, v in sorted(per_rule.items())},
        "utilisation": {k: settings.utilisation_of(k) for k in sorted(per_rule)},
        "calibrated": sorted(settings.calibration),
    }


def summary_markdown(s: dict) -> str:
    lines = [f"# Sizing of `{s['config']}`", "",
             f"{s['jobs']} jobs ({s['gpu_jobs']} on a GPU), sized in {s['sizing_wall_s']} s. GPU: {s['gpu']}.", "",
             "| GPU-hours | |", "| --- | --- |",
             f"| reference figures (bench.costs) | {s['gpu_hours_reference']} |",
             f"| sized FLOPs at the configured utilisation, plus load and I/O | {s['gpu_hours_sized']} |",
             f"| physical floor (FLOPs at peak) | {s['gpu_hours_floor']} |", "",
             f"Largest sized peak: {s['max_peak_gb']} GB. Jobs over the maximum wall time: {s['over_max_wall']}.", "",
             "| rule | jobs | GPU-hours | floor | largest peak GB | longest job h | utilisation | knobs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rule, v in s["per_rule"].items():
        lines.append(f"| {rule} | {v['jobs']} | {v['gpu_hours']} | {v['floor_hours']} | {v['max_peak_gb']} | "
                     f"{v['max_hours']} | {s['utilisation'][rule]} | {', '.join(v['knobs']) or '-'} |")
    if s["calibrated"]:
        lines += ["", f"Utilisation measured by a pilot (calibration) for: {', '.join(s['calibrated'])}."]
    return "\n".join(lines) + "\n"
