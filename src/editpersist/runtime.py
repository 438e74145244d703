"""Process-level concerns shared by every job: seeding, devices, timing, memory, logging."""

from __future__ import annotations

import logging
import os
import random
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def pick_dtype(device: str, precision: str = "auto"):
    """fp32 on CPU (half precision is slow and lossy there); bf16 on GPU unless told otherwise."""
    import torch

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    return table[precision]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_cuda_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


@dataclass
class RunStats:
    """Wall time, throughput and peak memory of one job, written next to its outputs."""

    name: str
    started: float = field(default_factory=time.perf_counter)
    steps: int = 0
    extra: dict = field(default_factory=dict)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def as_dict(self) -> dict:
        wall = self.elapsed()
        return {
            "name": self.name,
            "wall_s": round(wall, 3),
            "steps": self.steps,
            "steps_per_s": round(self.steps / wall, 4) if wall > 0 and self.steps else None,
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "peak_cuda_mb": peak_cuda_mb(),
            **self.extra,
        }


def get_logger(log_file: str | os.PathLike | None = None) -> logging.Logger:
    """A logger writing to the rule's log file (to stderr when there is none)."""
    logger = logging.getLogger("editpersist")
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    # A library imported by the job configures the root logger, whose handler also writes to the
    # (redirected) stderr: without this every line appeared twice in the rule's log.
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    handlers: list[logging.Handler] = [logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)]
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    return logger


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
