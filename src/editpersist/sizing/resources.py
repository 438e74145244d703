"""From a job's `Work` to its figures: peak GPU memory by category, FLOPs, time, and the
resources a cluster is asked for.

    peak     = resident weights + the largest call's own peak (a training step counts the
               weights it trains; an inference call only what it adds to the resident weights)
               + kept tensors (fine-tune snapshots) + the CUDA context
    time     = job overhead + checkpoint load + FLOPs / (peak FLOP rate x utilisation) + image I/O
    runtime  = time x runtime_safety (minutes, rounded up; x the attempt in the rule)
    gpu_mem  = peak x memory_safety, which must fit the GPU's memory

A job that does not fit is given the knobs of the diffusers training scripts in turn
(`FIT_LADDER`), and refused with one line when none suffices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError
from . import footprint as fp
from .settings import SizingSettings
from .work import GIB, Work

# Knobs a fine-tune job may be given to fit, cheapest first: recomputing activations in the
# backward pass (diffusers' --gradient_checkpointing), then moving the frozen text encoders and
# VAE to the CPU once the captions and latents are encoded (the examples' cached embeddings
# and latents). Both are honoured by finetuners.core.
FIT_LADDER = {"finetune": (("gradient_checkpointing",), ("gradient_checkpointing", "offload_frozen"))}


@dataclass(frozen=True)
class SizedJob:
    rule: str
    job: str
    model: str
    peak_gb: float
    peak_by_category_gb: dict[str, float]
    tflops: float
    compute_s: float
    load_s: float
    io_s: float
    hours: float
    runtime_min: int  # per attempt
    gpu_mem_gb: int  # requested
    host_mem_gb: int  # requested
    knobs: tuple[str, ...]
    utilisation: float

    def row(self) -> dict:
        return {"rule": self.rule, "job": self.job, "model": self.model, "peak_gb": round(self.peak_gb, 2),
                **{f"{k}_gb": round(v, 2) for k, v in self.peak_by_category_gb.items()},
                "tflops": round(self.tflops, 1), "compute_h": round(self.compute_s / 3600, 4),
                "load_s": round(self.load_s, 1), "io_s": round(self.io_s, 1), "hours": round(self.hours, 4),
                "runtime_min": self.runtime_min, "mem_gb_requested": self.gpu_mem_gb,
                "host_mem_gb_requested": self.host_mem_gb, "utilisation": self.utilisation,
                "knobs": "+".join(self.knobs) or "-"}


CATEGORIES = ("resident", "parameters", "gradients", "optimizer", "activations", "other")


def call_extra(workload, footprint: fp.Footprint) -> dict[str, float]:
    """Bytes a call adds beside the job's resident weights, by category."""
    out = dict(footprint.peak_bytes)
    if not isinstance(workload, fp.TrainStep):
        out.pop("parameters", None)  # already resident
    return out


def peak_bytes(work: Work, settings: SizingSettings, footprints: Callable) -> dict[str, float]:
    """The job's peak by category: the resident weights plus its most demanding call."""
    best: dict[str, float] = {}
    for workload, _ in work.calls:
        extra = call_extra(workload, footprints(workload))
        if sum(extra.values()) > sum(best.values()):
            best = extra
    out = {"resident": work.resident_bytes, **{k: 0.0 for k in CATEGORIES[1:]}}
    for k, v in best.items():
        out[k if k in out else "other"] += v
    out["other"] += work.keep_bytes + settings.cuda_context_gb * GIB
    return out


def size_work(work: Work, settings: SizingSettings, footprints: Callable) -> SizedJob:
    by_cat = peak_bytes(work, settings, footprints)
    peak = sum(by_cat.values()) / GIB
    flops = sum(n * footprints(w).flops for w, n in work.calls)
    util = settings.utilisation_of(work.rule)
    compute_s = flops / (settings.gpu.peak_tflops * 1e12 * util)
    load_s = work.load_bytes / (settings.load_gb_per_s * 1e9)
    io_s = work.images_io * settings.image_io_s
    total_s = settings.job_overhead_s + load_s + compute_s + io_s
    host = work.load_bytes / GIB + settings.host_overhead_gb
    return SizedJob(work.rule, work.job, work.model, peak, {k: v / GIB for k, v in by_cat.items()}, flops / 1e12,
                    compute_s, load_s, io_s, total_s / 3600, max(1, math.ceil(total_s * settings.runtime_safety / 60)),
                    math.ceil(peak * settings.memory_safety), math.ceil(host * settings.memory_safety), work.knobs,
                    util)


def fits(sized: SizedJob, settings: SizingSettings) -> bool:
    return sized.peak_gb * settings.memory_safety <= settings.gpu.memory_gb


def size_to_fit(build: Callable[[tuple[str, ...]], Work], settings: SizingSettings, footprints: Callable) -> SizedJob:
    """The job as configured, or with the first knobs of its rule's ladder that make it fit;
    a ConfigError naming the job and both figures when nothing does."""
    sized = size_work(build(()), settings, footprints)
    if fits(sized, settings):
        return sized
    first = sized
    for knobs in FIT_LADDER.get(sized.rule, ()):
        sized = size_work(build(knobs), settings, footprints)
        if fits(sized, settings):
            return sized
    tried = " with " + " and ".join(FIT_LADDER[first.rule][-1]) if first.rule in FIT_LADDER else ""
    raise ConfigError(f"{first.rule} {first.job}: sized peak {sized.peak_gb:.1f} GB x {settings.memory_safety} "
                      f"exceeds the GPU's {settings.gpu.memory_gb:g} GB (sizing.gpu.memory_gb){tried}; "
                      f"as configured {first.peak_gb:.1f} GB")
