"""The sizing's assumptions, read from a config's `sizing:` block (defaults in the schema).

Every figure the sizing cannot count is a key here, so a user with another GPU or file system
sets it instead of editing code, and a pilot run on the user's own GPU replaces the assumed
utilisation by measured ones (`calibration:`, see editpersist.sizing.calibrate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

# The job kinds the sizing prices: the GPU rules of the workflow.
GPU_RULES = ("layer_stats", "edit", "reedit", "class_images", "finetune", "generate", "generate_chunk", "score_chunk",
             "score")


@dataclass(frozen=True)
class GPUSpec:
    name: str
    peak_tflops: float  # dense bf16 tensor throughput
    memory_gb: float


@dataclass(frozen=True)
class SizingSettings:
    gpu: GPUSpec
    # Achieved share of the GPU's peak FLOP rate, per job kind (the rule's name); `default`
    # for kinds not listed. Replaced per kind by a calibration file's measured figures.
    utilisation: dict[str, float]
    runtime_safety: float  # requested runtime = sized time x this (and x the attempt)
    memory_safety: float  # a job fits when its sized peak x this is within the GPU's memory
    max_wall_hours: float  # a job sized longer is split into chunks
    load_gb_per_s: float  # reading a checkpoint from shared storage into GPU memory
    image_io_s: float  # encoding or decoding one PNG on the job's CPU core
    job_overhead_s: float  # process start, library imports, CUDA context
    cuda_context_gb: float  # GPU memory the CUDA context and allocator hold beyond tensors
    host_overhead_gb: float  # host memory of the Python process beside the weights it loads
    calibration: dict[str, float] = field(default_factory=dict)  # measured utilisation per kind

    def utilisation_of(self, kind: str) -> float:
        """A chunk of a job runs as the whole job does: generate_chunk at generate's rate."""
        for k in (kind, kind.removesuffix("_chunk")):
            if self.calibration.get(k) or self.utilisation.get(k):
                return self.calibration.get(k) or self.utilisation[k]
        return self.utilisation["default"]

    @property
    def max_wall_s(self) -> float:
        return self.max_wall_hours * 3600


DEFAULTS = {
    # H100 SXM: 989 dense bf16 TFLOP/s, 80 GB HBM3 (NVIDIA's H100 datasheet).
    "gpu": {"name": "H100-SXM-80GB", "peak_tflops": 989.0, "memory_gb": 80.0},
    # Assumed until a pilot measures them: large-batch transformer training reaches 30-50 % of
    # peak; diffusion sampling at batch 4-16 and CLIP scoring sit in the same range; the
    # closed-form edits are dominated by loading and small kernels.
    "utilisation": {"default": 0.3, "finetune": 0.35, "generate": 0.4, "class_images": 0.4, "score_chunk": 0.4,
                    "score": 0.4, "edit": 0.2, "reedit": 0.2, "layer_stats": 0.3},
    "runtime_safety": 1.5,
    "memory_safety": 1.1,
    "max_wall_hours": 24.0,
    "load_gb_per_s": 1.0,
    "image_io_s": 0.05,
    "job_overhead_s": 60.0,
    "cuda_context_gb": 1.0,
    "host_overhead_gb": 6.0,
    "calibration": None,
}


def load_calibration(path: str | Path) -> dict[str, float]:
    """{job kind: measured utilisation} from a file `python -m editpersist.bench calibrate` wrote."""
    from ..io import read_json

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sizing.calibration: {p} not found (write it with `python -m editpersist.bench calibrate`)")
    data = read_json(p)
    util = data.get("utilisation") if isinstance(data, dict) else None
    if not isinstance(util, dict) or not all(isinstance(v, (int, float)) and 0 < v <= 1 for v in util.values()):
        raise ConfigError(f"sizing.calibration: {p} has no 'utilisation' map of job kind -> share in (0, 1]")
    unknown = sorted(set(util) - set(GPU_RULES))
    if unknown:
        raise ConfigError(f"sizing.calibration: {p} names unknown job kinds {unknown}; expected {list(GPU_RULES)}")
    return {k: float(v) for k, v in util.items()}


def sizing_settings(config: dict) -> SizingSettings:
    block = {**DEFAULTS, **config.get("sizing", {})}
    util = {**DEFAULTS["utilisation"], **block["utilisation"]}
    calibration = load_calibration(block["calibration"]) if block.get("calibration") else {}
    return SizingSettings(
        gpu=GPUSpec(**{**DEFAULTS["gpu"], **block["gpu"]}), utilisation=util,
        runtime_safety=block["runtime_safety"], memory_safety=block["memory_safety"],
        max_wall_hours=block["max_wall_hours"], load_gb_per_s=block["load_gb_per_s"], image_io_s=block["image_io_s"],
        job_overhead_s=block["job_overhead_s"], cuda_context_gb=block["cuda_context_gb"],
        host_overhead_gb=block["host_overhead_gb"], calibration=calibration)
