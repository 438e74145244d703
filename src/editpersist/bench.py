"""Benchmarks, separate from the tests: `python -m editpersist.bench finetune`.

`finetune` times training steps of LoRA, DoRA and full fine-tuning on the toy SD and toy
FLUX models side by side. Each (model, method) runs in its own process so that its peak
memory is its own; steps after the first few (warm-up) are timed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from .io import write_json

MODELS = {"toy-sd": "sd", "toy-flux": "flux"}
METHODS = ("lora", "dora", "full")


def _one(model_dir: str, family_name: str, method: str, steps: int, warmup: int, batch: int) -> dict:
    import torch

    from .families import get_family
    from .finetuners.config import FinetuneConfig
    from .finetuners.subjects import ToySubject
    from .finetuners.trainer import finetune
    from .runtime import peak_cuda_mb, peak_rss_mb, pick_device

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


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "_one":
        model_dir, family_name, method, steps, warmup, batch = args[1:]
        print(json.dumps(_one(model_dir, family_name, method, int(steps), int(warmup), int(batch))))
        return
    p = argparse.ArgumentParser(prog="python -m editpersist.bench")
    p.add_argument("what", choices=["finetune"])
    p.add_argument("--models", default="resources/toy/models", type=Path)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", default="results/bench/finetune.json", type=Path)
    a = p.parse_args(args)
    print(table(finetune_bench(a.models, a.steps, a.warmup, a.batch, a.out)))


if __name__ == "__main__":
    main()
