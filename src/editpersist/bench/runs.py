"""Benchmarks, separate from the tests: `python -m editpersist.bench <what>` (all: `make bench`).

* `uce`: the whole UCE edit on SD 1.4's real shapes (random weights) and on toy SD, and the
  batched all-layer solve against a per-layer loop;
* `refact`: ReFACT edit time on toy SD and SD 1.4's text-encoder shapes, statistics excluded and included;
* `finetune`: training steps of LoRA, DoRA and full fine-tuning on toy SD and toy FLUX side by
  side, each (model, method) in its own process so that its peak memory is its own;
* `generation`: toy SD images/s, batched against one prompt at a time;
* `sampling`: what the toy models draw at fewer sampling steps, on the same noise as at 20;
* `storage`: bytes on disk of edit deltas, adapters and full deltas against a full checkpoint;
* `stages`: per-rule job counts and seconds from the workflow's benchmark files;
* `overhead`: the fixed cost of a job (a fresh interpreter's imports and model loads).
Each writes results/bench/<what>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..finetuners.methods import FINETUNERS
from ..io import write_json

ROOT = Path(__file__).resolve().parents[3]  # the repository: Snakefile, config/

MODELS = {"toy-sd": "sd", "toy-flux": "flux"}
# DreamBooth's step is full fine-tuning's at twice the batch: not measured apart.
METHODS = tuple(name for name, m in FINETUNERS.items() if not m.prior_preservation)


def _one(model_dir: str, family_name: str, method: str, steps: int, warmup: int, batch: int) -> dict:
    import torch

    from ..families import get_family
    from ..finetuners.config import FinetuneConfig
    from ..finetuners.subjects import ToySubject
    from ..finetuners.core import finetune
    from ..runtime import peak_cuda_mb, peak_rss_mb, pick_device

    torch.set_num_threads(2)
    device = pick_device("auto")
    family = get_family(family_name)
    pipe = family.load(model_dir, device=device)
    data = ToySubject("bench", "square", "purple").images(16, seed=0)
    cfg = FinetuneConfig(method, steps=warmup + steps, lr=1e-4, batch=batch)
    ends = finetune(pipe, family, data, cfg).step_ends
    step_s = (ends[-1] - ends[warmup - 1]) / steps
    trainable = sum(p.numel() for p in family.denoiser_of(pipe).parameters() if p.requires_grad)
    return {"step_ms": round(1000 * step_s, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
            "peak_cuda_mb": peak_cuda_mb(), "trainable_params": trainable, "batch": batch, "device": device}


def finetune_bench(root: Path, steps: int, warmup: int, batch: int, out: Path) -> dict:
    results = {}
    for model, family_name in MODELS.items():
        for method in METHODS:
            cmd = [sys.executable, "-m", "editpersist.bench", "_one", str(root / model), family_name, method,
                   str(steps), str(warmup), str(batch)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[f"{model}/{method}"] = json.loads(done.stdout.strip().splitlines()[-1])
    write_json(out, results)
    return results


def table(results: dict) -> str:
    rows = ["| model / method | step (ms) | peak RSS (MB) | trainable params |", "| --- | --- | --- | --- |"]
    rows += [f"| {k} | {v['step_ms']} | {v['peak_rss_mb']} | {v['trainable_params']:,} |" for k, v in results.items()]
    return "\n".join(rows)


def uce_per_layer(weights: dict, C_e, D_e, C_p, lam: float, s_e: float, s_p: float) -> dict:
    """The straightforward UCE loop (as in the official scripts): one normal-equation solve per
    layer, each forming its own M and right-hand side. The baseline of `uce_bench`."""
    import torch

    out = {}
    for key, W0 in weights.items():
        W0 = W0.float()
        M = lam * torch.eye(W0.shape[1]) + s_e * C_e.T @ C_e + s_p * C_p.T @ C_p
        R = lam * W0 + s_e * (W0 @ D_e.T) @ C_e + s_p * (W0 @ C_p.T) @ C_p
        out[key] = torch.linalg.solve(M, R.T).T
    return out


def _best_of(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def uce_bench(reps: int = 3) -> dict:
    """UCE on SD 1.4's real shapes (random weights) and on toy SD: the whole edit, and the
    batched all-layer solve against the per-layer loop."""
    import torch

    from ..editors.closed_form import apply_transform, shared_transform
    from ..editors.uce import UCE, UCEConfig
    from ..families import get_family
    from .reference_shapes import sd14_pipeline
    from ..tasks.toy import toy_cases

    torch.set_num_threads(2)
    torch.manual_seed(0)
    family = get_family("sd")
    out = {}
    pipe = sd14_pipeline()
    case = toy_cases()["appearance"][0]
    cfg = UCEConfig(token_mode="aligned")
    out["sd14_edit_s"] = round(_best_of(lambda: UCE(cfg).edit(pipe, family, list(case.requests)), reps), 3)
    weights = {k: m.weight.detach() for k, m in family.uce_modules(pipe).items()}
    g = torch.Generator().manual_seed(0)
    C_e, D_e = torch.randn(75, 768, generator=g), torch.randn(75, 768, generator=g)
    C_p = torch.randn(10 * 75, 768, generator=g)  # ten preserved prompts, aligned tokens
    batched = lambda: apply_transform(weights, shared_transform(C_e, D_e, C_p, 0.5, 1.0, 1.0))  # noqa: E731
    loop = lambda: uce_per_layer(weights, C_e, D_e, C_p, 0.5, 1.0, 1.0)  # noqa: E731
    out["sd14_layers"] = len(weights)
    out["sd14_solve_batched_s"] = round(_best_of(batched, reps), 4)
    out["sd14_solve_per_layer_s"] = round(_best_of(loop, reps), 4)
    a, b = batched(), loop()
    out["max_abs_diff"] = float(max((a[k] - b[k]).abs().max() for k in a))
    toy = family.load("resources/toy/models/toy-sd")
    out["toy_sd_edit_s"] = round(_best_of(lambda: UCE(cfg).edit(toy, family, list(case.requests)), reps), 4)
    out["speedup"] = round(out["sd14_solve_per_layer_s"] / out["sd14_solve_batched_s"], 1)
    return out


def generation_bench(model_dir: str = "resources/toy/models/toy-sd", n: int = 64, reps: int = 2) -> dict:
    """Images/s of toy SD generation batched (the workflow's way) against one prompt at a time."""
    import torch

    from ..families import get_family
    from ..sampling import SamplingConfig, generate

    torch.set_num_threads(2)
    family = get_family("sd")
    pipe = family.load(model_dir)
    prompts = ["a circle", "a square", "a king", "a red triangle"]
    per = n // len(prompts)
    out = {}
    for name, batch in (("batched", 64), ("one_at_a_time", 1)):
        cfg = SamplingConfig(batch=batch)
        secs = _best_of(lambda: generate(pipe, family, prompts, per, cfg), reps)
        out[f"{name}_images_per_s"] = round(per * len(prompts) / secs, 2)
    out["speedup"] = round(out["batched_images_per_s"] / out["one_at_a_time_images_per_s"], 2)
    return out


def sampling_steps_bench(models: Path = Path("resources/toy/models"), reader_dir: Path = Path("resources/toy/reader"),
                         steps: tuple[int, ...] = (20, 10), n_per_pair: int = 16, seed: int = 12345) -> dict:
    """Per toy model and sampling step count: prompt fidelity read by the reader on every colour
    x shape caption, images/s, and how often an image's read (colour and shape) agrees with the
    read of the same noise sampled at steps[0]: the evidence for the toy config's step count."""
    import numpy as np
    import torch

    from ..evaluation.toy_quality import prompt_fidelity
    from ..families import get_family
    from ..sampling import SamplingConfig
    from ..toy.reader import AttributeReader
    from ..toy.world import WorldSpec

    torch.set_num_threads(2)
    reader = AttributeReader.load(reader_dir)
    out = {"n_per_pair": n_per_pair, "seed": seed, "models": {}}
    for name, family_name in MODELS.items():
        family = get_family(family_name)
        pipe = family.load(models / name)
        rows, reference = {}, None
        for n_steps in steps:
            start = time.perf_counter()
            figures, images = prompt_fidelity(pipe, family, reader, WorldSpec(), n_per_pair,
                                              SamplingConfig(steps=n_steps), seed)
            secs = time.perf_counter() - start
            reads = [(r["color"], r["shape"]) for r in reader.read(images)]
            reference = reads if reference is None else reference
            rows[str(n_steps)] = {
                "prompt_fidelity": round(figures["prompt_fidelity"], 4), "color_acc": round(figures["color_acc"], 4),
                "shape_acc": round(figures["shape_acc"], 4), "images_per_s": round(len(images) / secs, 1),
                f"reads_agree_with_{steps[0]}_steps": round(float(np.mean([a == b for a, b in zip(reads, reference)])), 4),
                "n_images": figures["n_images"]}
        out["models"][name] = rows
    return out


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*.safetensors"))


def storage_bench(states: Path = Path("results/states/toy-sd"), model_dir: Path = Path("resources/toy/models/toy-sd"),
                  ) -> dict:
    """Bytes on disk of each kind of model state against the full checkpoint it builds on."""
    full = _dir_bytes(model_dir)
    rows = {"full_checkpoint": full}
    for name, path in (("uce_edit_delta", states / "edit/uce/appearance/circle-to-blue.safetensors"),
                       ("refact_edit_delta", states / "edit/refact/appearance/circle-to-blue.safetensors"),
                       ("lora_adapter", states / "base/ft/lora/sks-square/pytorch_lora_weights.safetensors"),
                       ("dora_adapter", states / "base/ft/dora/sks-square/pytorch_lora_weights.safetensors"),
                       ("full_ft_delta", states / "base/ft/full/sks-square/delta.safetensors")):
        if path.is_file():
            rows[name] = path.stat().st_size
    out = {"toy_sd": {k: {"bytes": v, "share_of_full": round(v / full, 4)} for k, v in rows.items()}}
    # SD 1.4 at its real shapes (fp16 on disk, as its published checkpoint): computed from shapes.
    from .reference_shapes import sd14_uce_parameters

    edited, total = sd14_uce_parameters()
    out["sd14_fp16"] = {"full_checkpoint_bytes": 2 * total, "uce_edit_delta_bytes": 2 * edited,
                        "uce_share_of_full": round(edited / total, 4)}
    return out


def refact_bench() -> dict:
    """ReFACT edit time on toy SD and on SD 1.4's text encoder shapes (random weights), with the
    layer statistics excluded (cached, as the workflow does) and included."""
    import tempfile

    import torch

    from ..editors.refact import refact_config, refact_corpus
    from ..editors.refact import ReFACT, compute_and_cache_stats
    from ..families import get_family
    from .reference_shapes import sd14_pipeline
    from ..tasks.toy import toy_cases

    torch.set_num_threads(2)
    torch.manual_seed(0)
    family = get_family("sd")
    case = toy_cases()["appearance"][0]
    base_cfg = {"layers": {"sd": 1}, "templates": ["{}", "a photo of {}"], "corpus": "toy", "corpus_size": 2000}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        toy = family.load("resources/toy/models/toy-sd")
        for name, pipe, layer in (("toy_sd", toy, 1), ("sd14", sd14_pipeline(), 9)):
            cfg = refact_config({**base_cfg, "layers": {"sd": layer}}, family, "appearance")
            stats = Path(tmp) / name
            t = time.perf_counter()
            compute_and_cache_stats(pipe, cfg.sites(family), refact_corpus(base_cfg, 0), stats)
            out[f"{name}_stats_s"] = round(time.perf_counter() - t, 2)
            t = time.perf_counter()
            ReFACT(cfg, stats).edit(pipe, family, list(case.requests))
            out[f"{name}_edit_s"] = round(time.perf_counter() - t, 2)
            out[f"{name}_edit_with_stats_s"] = round(out[f"{name}_stats_s"] + out[f"{name}_edit_s"], 2)
    return out


_OVERHEAD_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import torch, diffusers, open_clip, peft  # what every job script imports
from editpersist.evaluation import generation, scoring  # noqa: F401
t1 = time.perf_counter()
from editpersist.families import get_family
for name, path in (("sd", "resources/toy/models/toy-sd"), ("flux", "resources/toy/models/toy-flux")):
    get_family(name).load(path)
t2 = time.perf_counter()
print(json.dumps({"imports_s": round(t1 - t0, 2), "load_both_toy_models_s": round(t2 - t1, 2)}))
"""


def overhead_bench(reps: int = 3) -> dict:
    """Fixed cost of a job: a fresh interpreter's imports and toy model loads (best of `reps`)."""
    runs = []
    for _ in range(reps):
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _OVERHEAD_PROBE], capture_output=True, text=True, check=True)
        runs.append({**json.loads(done.stdout.strip().splitlines()[-1]), "process_s": round(time.perf_counter() - t, 2)})
    return min(runs, key=lambda r: r["process_s"])


TOY_BUILD = "toy"


def stage_times(bench_dir: Path) -> dict[str, dict]:
    """Per rule: jobs and summed job wall seconds from Snakemake's benchmark files
    (benchmarks/<rule>/.../*.tsv; the toy world's rules all live under benchmarks/toy/)."""
    import pandas as pd

    out: dict[str, dict] = {}
    for tsv in sorted(bench_dir.rglob("*.tsv")):
        rel = tsv.relative_to(bench_dir)
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        seconds = float(pd.read_csv(tsv, sep="\t")["s"].iloc[-1])
        entry = out.setdefault(rule, {"jobs": 0, "seconds": 0.0})
        entry["jobs"] += 1
        entry["seconds"] = round(entry["seconds"] + seconds, 1)
    return out


def stages_table(stages: dict[str, dict], cores: int) -> str:
    rows = ["| rule | jobs | job-seconds | per job (s) |", "| --- | --- | --- | --- |"]
    total = 0.0
    for rule, v in sorted(stages.items(), key=lambda kv: -kv[1]["seconds"]):
        rows.append(f"| {rule} | {v['jobs']} | {v['seconds']:,.0f} | {v['seconds'] / v['jobs']:.1f} |")
        total += v["seconds"] if rule != TOY_BUILD else 0.0
    rows.append(f"| **all but the toy build** | | {total:,.0f} | |")
    rows.append(f"| **÷ {cores} parallel job slots** (single-thread jobs) | | {total / cores:,.0f} "
                f"({total / cores / 60:.1f} min) | |")
    return "\n".join(rows)


def timed_snakemake(workdir: str | Path, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds and result of this repository's workflow run offline in `workdir`."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           *args]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - t0, res


def dry_run_jobs(config: Path, profile: Path | None = None) -> tuple[float, dict[str, int]]:
    """Wall seconds of `snakemake -n` on `config` in an empty directory, and its jobs per rule."""
    import tempfile

    with tempfile.TemporaryDirectory() as wd:
        (Path(wd) / "config").symlink_to(ROOT / "config")
        limits = ["--profile", str(profile.resolve())] if profile else ["--cores", "1"]
        wall, res = timed_snakemake(wd, "-n", "--configfile", str(config.resolve()), *limits)
    if res.returncode != 0:
        raise SystemExit(f"dry run failed: {res.stderr.strip().splitlines()[-1]}")
    stats = res.stdout.split("Job stats:")[1]
    counts = {}
    for line in stats.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return wall, counts


def plan_bench(config: Path = Path("config/paper.yaml"), profile: Path = Path("profiles/slurm")) -> dict:
    """The paper grid as planned: dry-run time, jobs per rule against the same grid without
    shared work, and the cost model's GPU-hours and disk on one H100."""
    from .. import grid
    from ..config import load_config
    from ..tasks import load_cases
    from . import costs

    wall, counts = dry_run_jobs(config, profile)
    cfg = load_config(config)  # as the workflow reads it: the schema's defaults filled
    cells = grid.study_cells(cfg, load_cases(cfg["tasks"], planning=True))
    per_model = {m["name"]: costs.model_cost(cells, m, cfg) for m in cfg["models"]}
    return {
        "config": str(config), "dry_run_s": round(wall, 1), "jobs": counts, "cells": len(cells),
        "shared": grid.shared_job_counts(cells), "naive": grid.naive_job_counts(cells),
        "gpu_hours": {name: {k: round(v, 1) for k, v in c.gpu_hours.items()} for name, c in per_model.items()},
        "gpu_hours_total": round(sum(sum(c.gpu_hours.values()) for c in per_model.values()), 1),
        "images": {name: c.images for name, c in per_model.items()},
        "disk_gb": {name: {k: round(v / 1e9, 1) for k, v in c.disk_bytes.items()} for name, c in per_model.items()},
        "disk_gb_total": round(sum(sum(c.disk_bytes.values()) for c in per_model.values()) / 1e9, 1),
    }


def bad_config_bench(corpus: Path = Path("tests/data/bad_configs.yaml"),
                     base: Path = Path("tests/data/tiny_toy.yaml")) -> dict:
    """Seconds from `snakemake` start to its one-line refusal, for every bad config of the
    test corpus (bar: under 10 s each, nothing created)."""
    import tempfile

    import yaml

    from ..config import with_overrides

    out = {}
    for case in yaml.safe_load(corpus.read_text()):
        cfg = with_overrides(yaml.safe_load(base.read_text()), case["set"], corpus.parent)
        with tempfile.TemporaryDirectory() as wd:
            (Path(wd) / "bad.yaml").write_text(yaml.safe_dump(cfg))
            wall, res = timed_snakemake(f"{wd}/run", "--cores", "1", "--configfile", f"{wd}/bad.yaml")
        out[case["name"]] = {"seconds": round(wall, 2), "exit": res.returncode, "error": res.stderr.strip()}
    out["max_seconds"] = max(v["seconds"] for v in out.values())
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "_one":
        model_dir, family_name, method, steps, warmup, batch = args[1:]
        print(json.dumps(_one(model_dir, family_name, method, int(steps), int(warmup), int(batch))))
        return
    p = argparse.ArgumentParser(prog="python -m editpersist.bench")
    simple = {"uce": uce_bench, "refact": refact_bench, "generation": generation_bench, "sampling": sampling_steps_bench,
              "storage": storage_bench, "overhead": overhead_bench, "plan": plan_bench, "configs": bad_config_bench}
    p.add_argument("what", choices=["finetune", "stages", "size", "calibrate", *simple, "coverage", "toy-finetunes"],
                   help="coverage and toy-finetunes take options of their own (<what> --help)")
    p.add_argument("--configfile", default="config/paper.yaml", type=Path, help="size, calibrate: the study's config")
    p.add_argument("--profile", default=None, type=Path, help="size: plan with this Snakemake profile")
    p.add_argument("--ship", action="store_true", help="size: add the grid's footprints to the package's cache")
    p.add_argument("--benchmarks", default="benchmarks", type=Path, help="stages: Snakemake's benchmark folder")
    p.add_argument("--cores", type=int, default=2, help="stages: job slots the run had")
    p.add_argument("--models", default="resources/toy/models", type=Path)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", default="results/bench/finetune.json", type=Path)
    a = p.parse_args(args)
    if a.what in simple:
        res = simple[a.what]()
        write_json(Path(f"results/bench/{a.what}.json"), res)
        print(json.dumps(res, indent=2))
        return
    if a.what == "size":
        from ..sizing.report import size_config

        size_config(a.configfile, a.profile, Path("results/bench"), ship=a.ship)
        print((Path("results/bench") / f"size_{a.configfile.stem}.md").read_text())
        return
    if a.what == "calibrate":
        from ..sizing.calibrate import calibrate

        out = calibrate(a.configfile, a.benchmarks, Path("calibration.json"))
        print(json.dumps(out, indent=2))
        return
    if a.what == "stages":
        stages = stage_times(a.benchmarks)
        write_json(Path("results/bench/stages.json"), stages)
        print(stages_table(stages, a.cores))
        return
    print(table(finetune_bench(a.models, a.steps, a.warmup, a.batch, a.out)))

