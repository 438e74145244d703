"""One generation job: load a model state once, generate a prompt set, write PNGs and a manifest.

Seeds depend only on (prompt, image index), so every state of a model starts from the same
noise and differences between states are the states' doing. A fine-tuned state with
intermediate snapshots also gets images of its cases' source prompts at each snapshot
(for persistence-over-steps curves), swapping the denoiser's weights in the loaded pipeline.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import InputError
from ..generate import SamplingConfig, generate
from ..io import atomic_dir
from ..runtime import RunStats
from ..states import apply_layer, finetune_snapshots, load_model_state, parse_state, restore_weights, save_weights
from ..tasks.cases import EditCase
from .prompts import QualityConfig, case_probes, quality_captions

log = logging.getLogger("editpersist")
FINAL = -1  # `step` of images of the finished state (snapshots carry their training step)


def state_prompts(cases: list[EditCase], quality: QualityConfig, n_per_prompt: int, n_source: int,
                  subject_prompts: tuple[str, ...] = ()) -> dict[str, int]:
    """Images to generate per prompt: n_source for each case's source prompt (efficacy rests on
    that one prompt), n_per_prompt for the other probes and for fine-tune subject prompts
    ("a sks square": did the fine-tune learn its subject?), fewer for quality captions. A prompt
    with several uses gets the largest count; every use reads its first images (same seeds)."""
    counts = {c: quality.images_per_caption for c in quality_captions(quality)}
    for prompt in subject_prompts:
        counts[prompt] = max(counts.get(prompt, 0), n_per_prompt)
    for case in cases:
        for role, probe in case_probes(case):
            n = n_source if role == "source" else n_per_prompt
            counts[probe.prompt] = max(counts.get(probe.prompt, 0), n)
    return counts


def _generate_counts(pipe, family, counts: dict[str, int], sampling: SamplingConfig, seed: int):
    """Generate prompts grouped by image count (each group batched together)."""
    images, jobs = [], []
    for n in sorted(set(counts.values()), reverse=True):
        group_images, group_jobs = generate(pipe, family, [p for p, k in counts.items() if k == n], n, sampling,
                                            base_seed=seed)
        images.append(group_images)
        jobs += group_jobs
    return np.concatenate(images), jobs


def _write_images(tmp: Path, sub: str, images: np.ndarray, jobs: list[tuple[str, int, int]],
                  prompt_ids: dict[str, int]) -> list[dict]:
    (tmp / sub).mkdir()
    rows = []
    for image, (prompt, index, seed) in zip(images, jobs):
        rel = f"{sub}/{prompt_ids[prompt]:04d}_{index:03d}.png"
        Image.fromarray(image).save(tmp / rel)
        rows.append({"prompt": prompt, "index": index, "seed": seed, "path": rel})
    return rows


def run_generation(model_dir: Path, family_name: str, state: str, layers: list[Path], prompt_set: str,
                   cases: list[EditCase],
                   quality: QualityConfig, n_per_prompt: int, n_source: int, sampling: SamplingConfig, seed: int,
                   device: str, out: Path, precision: str = "auto", subject_prompts: tuple[str, ...] = ()) -> None:
    stats = RunStats("generate")
    kind = parse_state(state).kind
    snapshots = finetune_snapshots(layers[-1]) if kind in ("base_ft", "edited_ft") else []
    family, pipe = load_model_state(model_dir, family_name, layers[:-1] if snapshots else layers, device, precision)
    counts = state_prompts(cases, quality, n_per_prompt, n_source, subject_prompts)
    prompt_ids = {p: i for i, p in enumerate(counts)}
    rows: list[dict] = []
    with atomic_dir(out) as tmp:
        if snapshots:
            start = save_weights(pipe, family)
            # Curves need many points more than tight ones: n_per_prompt images per snapshot.
            curve = {c.source.prompt: n_per_prompt for c in cases}
            for step in snapshots:
                apply_layer(pipe, family, layers[-1], snapshot=step)
                images, jobs = _generate_counts(pipe, family, curve, sampling, seed)
                rows += [{**r, "step": step} for r in _write_images(tmp, f"step{step}", images, jobs, prompt_ids)]
                restore_weights(pipe, start)
            apply_layer(pipe, family, layers[-1])
        images, jobs = _generate_counts(pipe, family, counts, sampling, seed)
        rows += [{**r, "step": FINAL} for r in _write_images(tmp, "final", images, jobs, prompt_ids)]
        manifest = pd.DataFrame(rows).assign(
            state=state, prompt_set=prompt_set, steps=sampling.steps, guidance=sampling.guidance,
            scheduler=type(pipe.scheduler).__name__, height=sampling.height, width=sampling.width)
        manifest.to_parquet(tmp / "manifest.parquet", index=False)
        stats.extra.update(images=len(manifest), images_per_s=round(len(manifest) / max(stats.elapsed(), 1e-9), 2))
        (tmp / "generate.json").write_text(json.dumps(stats.as_dict(), indent=2) + "\n")
    log.info("generated %d images of %d prompts for %s", len(rows), len(counts), state)


def read_manifest(gen_dir: Path) -> pd.DataFrame:
    path = Path(gen_dir) / "manifest.parquet"
    if not path.is_file():
        raise InputError(f"{path}: missing generation manifest")
    return pd.read_parquet(path).assign(dir=str(gen_dir))


def load_images(gen_dir: Path, paths: list[str]) -> np.ndarray:
    out = []
    for rel in paths:
        try:
            out.append(np.asarray(Image.open(Path(gen_dir) / rel).convert("RGB")))
        except OSError as e:
            raise InputError(f"{Path(gen_dir) / rel}: unreadable image ({e})") from e
    return np.stack(out)

