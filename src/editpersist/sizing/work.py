"""What one workflow job does on the GPU, in the units the footprint engine prices.

Each GPU rule's job becomes a `Work`: the weights it holds on the GPU for the whole job, and
the calls it repeats (a denoiser step, a VAE decode, a training step, a judge batch ...) with
their counts, read from the same job record the rule passes to its script. The counts follow
the code: generation makes `state_prompts` images per member state plus each snapshot's
curve prompts; a fine-tune job trains every seed; a debias edit measures every phrasing in
every round (an upper bound: the loop stops when balanced).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..families import get_family
from . import architectures as archs
from . import footprint as fp

GIB = 1024**3


@dataclass(frozen=True)
class Work:
    rule: str
    job: str
    model: str
    arch: str
    dtype: str  # the pipeline's weights on the GPU
    resident_bytes: float  # weights on the GPU for the whole job, beside what a call traces itself
    calls: tuple[tuple[object, float], ...]  # (workload, times it runs)
    keep_bytes: float = 0.0  # tensors the job keeps beside a call's peak (fine-tune snapshots)
    images_io: int = 0  # PNGs written or read
    load_bytes: float = 0.0  # checkpoint bytes read from storage
    knobs: tuple[str, ...] = field(default=())


def pipeline_dtype(family_name: str, precision: str) -> str:
    """The weights' dtype on a GPU, as ModelFamily.dtype picks it."""
    if precision != "auto":
        return precision
    return get_family(family_name).gpu_precision


def uses_cfg(guidance: float) -> bool:
    """Classifier-free guidance doubles every denoiser call: the SD and SDXL pipelines do it at
    guidance > 1, and so does FLUX's true CFG (ModelFamily.call_kwargs); FLUX.1-schnell's
    distilled guidance (0) makes one call."""
    return guidance > 1.0


def sampling_calls(arch: str, family_name: str, sampling: dict, n_images: int, dtype: str) -> list[tuple[object, float]]:
    """Denoiser steps, VAE decodes and prompt encodings of `n_images` images in batches of the
    sampling block's size (the last batch counted full: an upper bound)."""
    if n_images <= 0:
        return []
    batch = sampling.get("batch", 1)
    batches = math.ceil(n_images / batch)
    h, w = sampling["height"], sampling["width"]
    family = get_family(family_name)
    calls = [(fp.DenoiseStep(arch, batch, h, w, uses_cfg(sampling.get("guidance", 0.0)), dtype),
              batches * sampling["steps"]),
             (fp.VaeDecode(arch, batch, h, w, dtype), batches)]
    calls += [(fp.TextEncode(arch, enc, batch, dtype), batches) for enc in family.text_encoders]
    return calls


def weight_bytes(arch: str, dtype: str, components: tuple[str, ...] | None = None) -> float:
    """Bytes of the named pipeline components' weights in `dtype` (all of them by default)."""
    return float(sum(archs.parameter_bytes(arch, c, dtype) for c in (components or archs.components(arch))))
