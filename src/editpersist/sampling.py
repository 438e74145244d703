"""Image generation with per-(prompt, index) seeds, so every state of a model sees the same noise."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Collection

import numpy as np
import torch
from tqdm.auto import tqdm

from .families.base import ModelFamily


@dataclass(frozen=True)
class SamplingConfig:
    steps: int = 20
    guidance: float = 5.0
    height: int = 32
    width: int = 32
    batch: int = 64


# Each use of generated images draws its seeds from its own stream: the evaluation's images,
# the UCE debias meter's and DreamBooth's class images never share a seed, so no loop is tuned
# on, and no fine-tune trains on, the very noise the evaluation measures with.
SEED_STREAMS = {"evaluation": 0, "debias_meter": 1_000_003, "class_images": 2_000_029, "persist": 3_000_017,
                "persist_meter": 4_000_037, "finetune_fit": 5_000_011, "persist_words": 6_000_011}


def stream_seed(seed: int, stream: str) -> int:
    """The base seed of a stream of images (see SEED_STREAMS)."""
    return seed + SEED_STREAMS[stream]


def image_seed(base_seed: int, prompt: str, index: int) -> int:
    """A seed that depends only on (base seed, prompt text, image index), not on batching."""
    return (base_seed * 1_000_003 + zlib.crc32(prompt.encode()) * 101 + index) % 2**63


def generate(pipe, family: ModelFamily, prompts: list[str], n_per_prompt: int, cfg: SamplingConfig,
             base_seed: int = 0) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """Generate n_per_prompt images for each prompt (see generate_counts)."""
    return generate_counts(pipe, family, {p: n_per_prompt for p in prompts}, cfg, base_seed)


@torch.inference_mode()
def generate_counts(pipe, family: ModelFamily, counts: dict[str, int], cfg: SamplingConfig,
                    base_seed: int = 0, keep: Collection[str] | None = None
                    ) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """Generate counts[prompt] images of each prompt, in full batches of cfg.batch across prompts
    (a prompt's few images share a batch with others: small batches are slow on a CPU).

    `keep`: only these prompts' images (a chunk of a long generation job). They are made in the
    very batches the whole job makes, batches holding none of them skipped: a kernel may round
    differently for another batch size, and a chunk's images must be the whole job's.

    Returns NHWC uint8 images and (prompt, index, seed) per image, in prompt-major order.
    """
    jobs = [(p, i, image_seed(base_seed, p, i)) for p, n in counts.items() for i in range(n)]
    extra = family.call_kwargs(pipe, cfg.guidance)
    out, made = [], []
    for start in tqdm(range(0, len(jobs), cfg.batch), desc="generate", mininterval=5.0):
        chunk = jobs[start:start + cfg.batch]
        wanted = np.array([keep is None or p in keep for p, _, _ in chunk])
        if not wanted.any():
            continue
        gens = [torch.Generator(device="cpu").manual_seed(s) for _, _, s in chunk]
        images = pipe(
            prompt=[p for p, _, _ in chunk], height=cfg.height, width=cfg.width,
            num_inference_steps=cfg.steps, generator=gens, output_type="np", **extra,
        ).images
        out.append((np.asarray(images)[wanted] * 255).round().clip(0, 255).astype(np.uint8))
        made += [job for job, w in zip(chunk, wanted) if w]
    return np.concatenate(out), made
