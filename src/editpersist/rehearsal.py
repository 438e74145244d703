"""The rehearsal of the published grid: tiny *random* pipelines of the real architectures, and
every other input a real run reads, built from nothing (config/rehearsal.yaml).

Each model is saved with `save_pretrained`, so its folder looks exactly like a downloaded
checkpoint: SD 1.x (UNet + CLIP, PNDM scheduler), SDXL (two CLIP encoders, the second with
projection; Euler scheduler), FLUX (CLIP + T5, MMDiT, flow-matching Euler scheduler), with
the schedulers' published configurations and CLIP's full 49,408-token vocabulary at 77
tokens. The numbers such models produce mean nothing; the code paths are the paper grid's.
Also made here: a random open_clip model directory for the judge, a DreamBooth-style folder
of photos, a reference folder for the distances and the text corpus of ReFACT's statistics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .io import atomic_dir

# FLUX's T5 tokenizer, trained on the corpus: small enough to build, fine-tune and sample in
# seconds on a CPU.
T5_MAX_LENGTH = 64
T5_VOCAB_SIZE = 400


def build_pipeline(family_name: str, corpus: list[str], out: Path, seed: int = 0) -> None:
    """A random pipeline of the family's architecture (ModelFamily.tiny_pipeline) with its
    published scheduler, written as a model folder. Its CLIP tokenizer is CLIP's own; a T5
    tokenizer is trained on `corpus` (every character of it is covered; others become <unk>,
    as with T5's own vocabulary)."""
    import tempfile

    from .families import get_family
    from .toy.tokenizers import build_full_clip_tokenizer, build_t5_tokenizer

    family = get_family(family_name)
    with tempfile.TemporaryDirectory() as scratch:
        kinds = {"clip": build_full_clip_tokenizer(Path(scratch) / "clip")}
        if "t5" in family.tokenizer_kinds:
            kinds["t5"] = build_t5_tokenizer(corpus, Path(scratch) / "t5", vocab_size=T5_VOCAB_SIZE,
                                             normalization="identity")
            kinds["t5"].model_max_length = T5_MAX_LENGTH
        torch.manual_seed(seed)
        pipe = family.tiny_pipeline(dict(zip(family.tokenizers, (kinds[k] for k in family.tokenizer_kinds))),
                                    family.published_scheduler())
        with atomic_dir(out) as tmp:
            pipe.save_pretrained(tmp)


def build_judge(out: Path, seed: int = 0) -> None:
    """A random open_clip CLIP (the toy judge's architecture at CLIP's 77-token context), saved
    as an open_clip local directory: the judge path of a real run loads it unchanged."""
    import open_clip

    from .toy.judge import judge_model_cfg, save_open_clip_dir

    torch.manual_seed(seed)
    cfg = judge_model_cfg(width=32, context_length=77)
    save_open_clip_dir(open_clip.model.CLIP(**cfg).eval(), cfg, out)


def smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """`n` RGB images of random colour gradients (photo-like: no pixel noise), NHWC uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    out = []
    for _ in range(n):
        corners = rng.uniform(0, 255, size=(4, 3))
        img = (corners[0] * ((1 - x) * (1 - y))[..., None] + corners[1] * (x * (1 - y))[..., None]
               + corners[2] * ((1 - x) * y)[..., None] + corners[3] * (x * y)[..., None])
        out.append(img.round().clip(0, 255).astype(np.uint8))
    return np.stack(out)


def write_image_folder(out: Path, n: int, size: int, seed: int) -> None:
    """PNG files 00.png, 01.png, ... (google/dreambooth's naming) of `smooth_images`."""
    with atomic_dir(out) as tmp:
        for i, img in enumerate(smooth_images(n, size, seed)):
            Image.fromarray(img).save(tmp / f"{i:02d}.png")


def corpus_texts(cases: dict, captions: list[str]) -> list[str]:
    """Every prompt and request text of the grid's edit cases, then the quality captions."""
    from .evaluation.prompts import case_probes

    every = [c for task_cases in cases.values() for c in task_cases]
    texts = [p.prompt for c in every for _, p in case_probes(c)]
    texts += [t for c in every for r in c.requests for t in (r.source, r.target, r.original) if t]
    return texts + captions


def write_corpus(texts: list[str], out: Path) -> None:
    """One text per line, as ReFACT's statistics read a corpus (WikiText-103 in the paper)."""
    from .io import atomic_path

    lines = list(dict.fromkeys(" ".join(t.split()) for t in texts if t.strip()))
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
