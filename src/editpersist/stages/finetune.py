"""One fine-tune job: start from a model state (base, or base + edit delta), tune, write the result.

The output directory holds either `pytorch_lora_weights.safetensors` (LoRA/DoRA, diffusers
format) or `delta.safetensors` (full/DreamBooth: the denoiser's tensors, keyed like edit
deltas, applied on top of the starting state), optional `snapshot_<step>.safetensors`, and
`finetune.json` (config, loss curve, steps/s, peak memory, wall time).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..finetuners.adapters import write_adapter
from ..finetuners.config import FinetuneConfig
from ..finetuners.subjects import FolderSubject, ToySubject
from ..finetuners.core import ImageSet, finetune, trained_tensors
from ..sampling import SamplingConfig, generate, stream_seed
from ..io import atomic_dir, atomic_path, save_tensors
from ..runtime import RunStats
from ..states import load_model_state

log = logging.getLogger("editpersist")


def _start_layers(start_delta: Path | None) -> list[Path]:
    return [start_delta] if start_delta is not None else []


def make_class_images(model_dir: Path, family_name: str, start_delta: Path | None, subject: ToySubject | FolderSubject, n: int,
                      sampling: SamplingConfig, seed: int, device: str, out: Path) -> None:
    """DreamBooth prior-preservation images of the subject's class, from the model being tuned,
    with seeds of their own: the class prompt ("a square") may also be an evaluation prompt."""
    family, pipe = load_model_state(model_dir, family_name, _start_layers(start_delta), device)
    prior = class_image_set(pipe, family, subject, n, sampling, seed)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, images=prior.images, captions=np.array(prior.captions))


def class_image_set(pipe, family, subject: ToySubject | FolderSubject, n: int, sampling: SamplingConfig,
                    seed: int) -> ImageSet:
    """`n` images of the subject's class prompt from `pipe`, on the class-image seed stream."""
    images, _ = generate(pipe, family, [subject.class_prompt], n, sampling, base_seed=stream_seed(seed, "class_images"))
    return ImageSet(images, [subject.class_prompt] * n)


def load_image_set(path: Path) -> ImageSet:
    try:
        with np.load(path) as z:
            return ImageSet(z["images"], [str(c) for c in z["captions"]])
    except (OSError, KeyError, ValueError) as e:
        raise InputError(f"{path}: not a readable image set ({e})") from e


def run_finetune(model_dir: Path, family_name: str, start_delta: Path | None, cfg: FinetuneConfig,
                 subject: ToySubject | FolderSubject, n_images: int, resolution: int, class_images: Path | None,
                 device: str, out: Path, data_seed: int = 0) -> None:
    """`cfg.seed` drives the training's randomness (noise, timesteps, adapter init, batches);
    the subject's images come from `data_seed`, the study's, so every fine-tune seed trains on
    the same photos, as a user's fine-tunes of one photo set would."""
    stats = RunStats(f"finetune-{cfg.method}")
    family, pipe = load_model_state(model_dir, family_name, _start_layers(start_delta), device)
    prior = load_image_set(class_images) if class_images else None
    result = finetune(pipe, family, subject.images(n_images, data_seed, resolution), cfg, prior=prior)
    stats.steps = cfg.steps
    with atomic_dir(out) as tmp:
        if cfg.uses_adapter:
            write_adapter(pipe, family, tmp)
        else:
            save_tensors(tmp / "delta.safetensors", trained_tensors(pipe, family, cfg))
        for step, state in result.snapshots.items():
            save_tensors(tmp / f"snapshot_{step}.safetensors", state)
        record = {"config": asdict(cfg), "subject": asdict(subject), "start": str(start_delta or "base"),
                  "loss_curve": result.losses, **stats.as_dict()}
        (tmp / "finetune.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    log.info("finetune %s: %d steps, final loss %.4f", cfg.method, cfg.steps, float(np.mean(result.losses[-10:])))


def run_finetune_seeds(model_dir: Path, family_name: str, start_delta: Path | None, cfg: FinetuneConfig,
                       subject: ToySubject | FolderSubject, n_images: int, resolution: int, class_images: Path | None,
                       device: str, out: Path, seeds: list[int], data_seed: int = 0) -> None:
    """One fine-tune per seed, each in `out/seed<k>/` (the directory appears only when all are
    done). The model is reloaded per seed: undoing an injected adapter in place is not worth
    the risk of a seed starting from another's weights. Snapshots are kept on the first seed
    only: they feed the persistence-over-steps curves, which need many points more than tight
    ones, and each snapshot costs a generation of the source prompts."""
    with atomic_dir(out) as tmp:
        for seed in seeds:
            log.info("fine-tune seed %d of %s", seed, seeds)
            seed_cfg = replace(cfg, seed=seed, snapshots=cfg.snapshots if seed == seeds[0] else ())
            run_finetune(model_dir, family_name, start_delta, seed_cfg, subject, n_images, resolution,
                         class_images, device, tmp / f"seed{seed}", data_seed=data_seed)
