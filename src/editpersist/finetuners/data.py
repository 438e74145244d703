"""Fine-tune data from disk: the DreamBooth folder layout and plain image-caption folders.

* DreamBooth: `<root>/<subject>/*.jpg|png`, captioned "a sks <class>" with the class read
  from `<root>/prompts_and_classes.txt` (lines "subject_name,class", as in google/dreambooth).
* Caption folder: images plus `metadata.jsonl` (`{"file_name": ..., "text": ...}` per line,
  the diffusers/datasets convention) or `metadata.csv` with columns file_name,text.

Images are centre-cropped and resized to the model's resolution.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from .core import ImageSet

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def load_image(path: Path, size: int) -> np.ndarray:
    try:
        img = Image.open(path).convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise InputError(f"{path}: unreadable image ({e})") from e
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def dreambooth_classes(root: Path) -> dict[str, str]:
    listing = root / "prompts_and_classes.txt"
    if not listing.is_file():
        raise InputError(f"{listing}: missing (subject,class list of the DreamBooth layout)")
    classes = {}
    for n, line in enumerate(listing.read_text().splitlines(), start=1):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and all(parts):
            classes[parts[0]] = parts[1]
    if not classes:
        raise InputError(f"{listing}: no 'subject,class' lines")
    return classes


def load_dreambooth(root: Path, subject: str, size: int, token: str = "sks") -> ImageSet:
    root = Path(root)
    cls = dreambooth_classes(root).get(subject)
    if cls is None:
        raise InputError(f"{root / 'prompts_and_classes.txt'}: no class listed for subject {subject!r}")
    images = load_image_folder(root / subject, size)
    return ImageSet(images, [f"a {token} {cls}"] * len(images))


def load_image_folder(folder: Path, size: int) -> np.ndarray:
    """Every image of a folder (sorted by name), centre-cropped to `size`; NHWC uint8."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: image folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return np.stack([load_image(p, size) for p in files])


def load_caption_folder(root: Path, size: int) -> ImageSet:
    root = Path(root)
    if (root / "metadata.jsonl").is_file():
        rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines() if line.strip()]
        meta = root / "metadata.jsonl"
    elif (root / "metadata.csv").is_file():
        meta = root / "metadata.csv"
        with open(meta, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        raise InputError(f"{root}: no metadata.jsonl or metadata.csv (file_name,text)")
    if not rows:
        raise InputError(f"{meta}: no entries")
    images, captions = [], []
    for n, row in enumerate(rows, start=1):
        if not row.get("file_name") or not row.get("text"):
            raise InputError(f"{meta}: entry {n} needs file_name and text")
        path = root / row["file_name"]
        if not path.is_file():
            raise InputError(f"{path}: listed in {meta.name} (entry {n}) but missing")
        images.append(load_image(path, size))
        captions.append(row["text"])
    return ImageSet(np.stack(images), captions)
