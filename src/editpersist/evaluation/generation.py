"""One generation job: the states of one group (a state, or a fine-tune's seeds), one prompt set.

The layers the states share are loaded once; each state's own layers are applied, its images
written (PNGs and a manifest row each) and its layers undone. Seeds depend only on (prompt,
image index), so every state of a model starts from the same noise and differences between
states are the states' doing. A fine-tuned state with intermediate snapshots also gets images
of its cases' source prompts at each snapshot (for persistence-over-steps curves).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..chunking import chunk_of
from ..errors import InputError
from ..io import atomic_dir, link_or_copy
from ..runtime import RunStats
from ..sampling import SamplingConfig, generate_counts
from ..families.base import save_weights
from ..states import apply_layer, apply_undoable, finetune_snapshots, load_model_state, State
from ..tasks.cases import EditCase
from .prompts import QualityConfig, case_probes, probe_counts, probe_image_count, quality_captions

log = logging.getLogger("editpersist")
FINAL = -1  # `step` of images of the finished state (snapshots carry their training step)


def state_prompts(cases: list[EditCase], quality: QualityConfig, n_per_prompt: int, n_source: int,
                  subject_prompts: tuple[str, ...] = (), captions: list[str] | None = None,
                  n_check: int | None = None) -> dict[str, int]:
    """Images to generate per prompt: n_source for the prompts each case's edit is fitted on
    (efficacy rests on the source; debias on every phrasing it balances), n_check (default
    n_per_prompt) for the prompts that decide whether a fine-tune seed stays in its cell (the
    edit's target prompt; fine-tune subject prompts, "a sks square": did the fine-tune learn its
    subject?), n_per_prompt for the other probes, fewer for quality captions. A prompt with
    several uses gets the largest count; every use reads its first images (same seeds).
    `captions`: the quality captions, when not read from `quality`'s file."""
    captions = quality_captions(quality) if captions is None else captions
    counts = {c: quality.images_per_caption for c in captions}
    for prompt in subject_prompts:
        counts[prompt] = max(counts.get(prompt, 0), n_per_prompt if n_check is None else n_check)
    per_role = probe_counts(n_source, n_per_prompt, n_check)
    for case in cases:
        for role, probe in case_probes(case):
            counts[probe.prompt] = max(counts.get(probe.prompt, 0), probe_image_count(case, role, probe, per_role))
    return counts


def curve_prompts(cases: list[EditCase], n_per_prompt: int) -> dict[str, int]:
    """Images per prompt at each fine-tune snapshot: the cases' source prompts (curves need many
    points more than tight ones: n_per_prompt images each)."""
    return {c.source.prompt: n_per_prompt for c in cases}


def _write_images(tmp: Path, sub: str, images: np.ndarray, jobs: list[tuple[str, int, int]],
                  prompt_ids: dict[str, int]) -> list[dict]:
    (tmp / sub).mkdir(parents=True)
    rows = []
    for image, (prompt, index, seed) in zip(images, jobs):
        rel = f"{sub}/{prompt_ids[prompt]:04d}_{index:03d}.png"
        Image.fromarray(image).save(tmp / rel)
        rows.append({"prompt": prompt, "index": index, "seed": seed, "path": rel})
    return rows


def common_prefix(layer_lists: list[list[Path]]) -> list[Path]:
    """The layers every member state starts with, short of its own last layer (loaded once for
    all of them; a fine-tune's last layer stays separate for its snapshots)."""
    prefix = []
    for layers in zip(*(lst[:-1] for lst in layer_lists)):
        if len(set(layers)) > 1:
            break
        prefix.append(layers[0])
    return prefix


def member_rows(pipe, family, loaded: dict, state: str, rest: list[Path], counts: dict[str, int],
                curve: dict[str, int], sampling: SamplingConfig, seed: int, tmp: Path, sub: str,
                prompt_ids: dict[str, int], keep: frozenset[str] | None = None) -> list[dict]:
    """Images of one member state (`rest`: its layers beyond the loaded ones); leaves `pipe` as
    loaded. A fine-tuned state with snapshots also gets its source prompts at each snapshot.
    `keep`: only these prompts' images (a chunk of the job)."""
    rows: list[dict] = []
    ft_dir = rest[-1] if rest and State.parse(state).kind in ("base_ft", "edited_ft") else None
    curve_here = keep is None or not keep.isdisjoint(curve)
    for step in finetune_snapshots(ft_dir) if ft_dir and curve_here else []:
        undo = apply_undoable(pipe, family, rest[:-1], loaded)
        apply_layer(pipe, family, ft_dir, snapshot=step)
        images, jobs = generate_counts(pipe, family, curve, sampling, seed, keep)
        rows += [{**r, "step": step, "state": state} for r in _write_images(tmp, f"{sub}step{step}", images, jobs,
                                                                            prompt_ids)]
        undo()
    undo = apply_undoable(pipe, family, rest, loaded)
    images, jobs = generate_counts(pipe, family, counts, sampling, seed, keep)
    rows += [{**r, "step": FINAL, "state": state} for r in _write_images(tmp, f"{sub}final", images, jobs, prompt_ids)]
    undo()
    return rows


def run_generation(model_dir: Path, family_name: str, group: str, members: dict[str, list[Path]], prompt_set: str,
                   cases: list[EditCase],
                   quality: QualityConfig, n_per_prompt: int, n_source: int, sampling: SamplingConfig, seed: int,
                   device: str, out: Path, precision: str = "auto", subject_prompts: tuple[str, ...] = (),
                   chunk: str | None = None, n_check: int | None = None) -> None:
    """The images of every member state of a group (`members`: state -> its layers), with the
    layers they share loaded once; each member's own images go to `<seed>/` when the group has
    several. `chunk` ("<i>-of-<n>", editpersist.chunking): only that contiguous run of the
    prompts, each image and file name as the whole job makes it (gather_generation joins them)."""
    stats = RunStats("generate")
    prefix = common_prefix(list(members.values()))
    family, pipe = load_model_state(model_dir, family_name, prefix, device, precision)
    loaded = save_weights(pipe, family)  # every member's layers are undone back to these
    counts = state_prompts(cases, quality, n_per_prompt, n_source, subject_prompts, n_check=n_check)
    prompt_ids = {p: i for i, p in enumerate(counts)}
    curve = curve_prompts(cases, n_per_prompt)
    keep = frozenset(chunk_of(list(counts), chunk)) if chunk else None
    rows: list[dict] = []
    with atomic_dir(out) as tmp:
        for state, layers in members.items():
            sub = "" if state == group else f"seed{State.parse(state).seed}/"
            rows += member_rows(pipe, family, loaded, state, layers[len(prefix):], counts, curve, sampling, seed,
                                tmp, sub, prompt_ids, keep)
        manifest = pd.DataFrame(rows).assign(
            group=group, prompt_set=prompt_set, steps=sampling.steps, guidance=sampling.guidance,
            scheduler=type(pipe.scheduler).__name__, height=sampling.height, width=sampling.width)
        manifest.to_parquet(tmp / "manifest.parquet", index=False)
        stats.extra.update(images=len(manifest), images_per_s=round(len(manifest) / max(stats.elapsed(), 1e-9), 2))
        (tmp / "generate.json").write_text(json.dumps(stats.as_dict(), indent=2) + "\n")
    log.info("generated %d images of %d prompts for %d state(s) of %s", len(rows), len(keep or counts), len(members),
             group)


def manifest_order(manifest: pd.DataFrame, members: list[str], counts: dict[str, int],
                   curve: dict[str, int]) -> np.ndarray:
    """Row positions that put manifest rows in the order run_generation writes them: member state
    by member state, each snapshot's images (ascending step) before the final ones, prompts in
    the order they are made (`curve` at a snapshot, `counts` at the end), then by image index."""
    member = manifest["state"].map({s: i for i, s in enumerate(members)}).to_numpy()
    final = manifest["step"].to_numpy() == FINAL
    at_end = manifest["prompt"].map({p: i for i, p in enumerate(counts)})
    at_snapshot = manifest["prompt"].map({p: i for i, p in enumerate(curve)})
    prompt = np.where(final, at_end.to_numpy(), at_snapshot.to_numpy())
    step = np.where(final, np.iinfo(np.int64).max, manifest["step"].to_numpy())
    return np.lexsort((manifest["index"].to_numpy(), prompt, step, member))


def gather_generation(chunks: list[Path], out: Path, members: list[str], cases: list[EditCase],
                      quality: QualityConfig, n_per_prompt: int, n_source: int,
                      subject_prompts: tuple[str, ...] = (), n_check: int | None = None) -> None:
    """The directory the whole generation job makes (run_generation), from its chunks' (its
    `chunk` argument): each image file linked in under its own name, the manifests joined in the
    whole job's row order, so the manifest is the same file."""
    counts = state_prompts(cases, quality, n_per_prompt, n_source, subject_prompts, n_check=n_check)
    parts = [_manifest_file(Path(c)) for c in chunks]
    manifest = pd.concat(parts, ignore_index=True)
    final = manifest[manifest["step"] == FINAL]
    if len(final) != len(members) * sum(counts.values()) or manifest["path"].duplicated().any():
        raise InputError(f"{out}: its chunks {[str(c) for c in chunks]} do not hold each image of "
                         f"{len(counts)} prompts for {len(members)} state(s) exactly once")
    manifest = manifest.iloc[manifest_order(manifest, members, counts, curve_prompts(cases, n_per_prompt))]
    with atomic_dir(out) as tmp:
        for chunk, part in zip(chunks, parts):
            for rel in part["path"]:
                link_or_copy(Path(chunk) / rel, tmp / rel)
        manifest.reset_index(drop=True).to_parquet(tmp / "manifest.parquet", index=False)
        chunk_stats = {Path(c).name: json.loads((Path(c) / "generate.json").read_text()) for c in chunks}
        (tmp / "generate.json").write_text(json.dumps({"name": "generate", "images": len(manifest),
                                                       "chunks": chunk_stats}, indent=2) + "\n")
    log.info("gathered %d images from %d chunks into %s", len(manifest), len(chunks), out)


def _manifest_file(gen_dir: Path) -> pd.DataFrame:
    path = Path(gen_dir) / "manifest.parquet"
    if not path.is_file():
        raise InputError(f"{path}: missing generation manifest")
    return pd.read_parquet(path)


def read_manifest(gen_dir: Path) -> pd.DataFrame:
    """A generation directory's manifest, with the directory as column `dir`."""
    return _manifest_file(gen_dir).assign(dir=str(gen_dir))


def load_images(gen_dir: Path, paths: list[str]) -> np.ndarray:
    out = []
    for rel in paths:
        try:
            out.append(np.asarray(Image.open(Path(gen_dir) / rel).convert("RGB")))
        except OSError as e:
            raise InputError(f"{Path(gen_dir) / rel}: unreadable image ({e})") from e
    return np.stack(out)
