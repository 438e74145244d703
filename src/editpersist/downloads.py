"""Fetching the real study's dataset files, pinned by commit, only when the config allows it.

design.md section 7 gives the sha256 of two files abbreviated as "first 8 ... last
hex digits"; they are checked as such (both ends must match). Files with no pinned
hash are accepted on first download and their full sha256 is written beside them,
so every later run (and every other machine) can check against it.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, InputError
from .io import atomic_path


@dataclass(frozen=True)
class PinnedFile:
    repo: str
    commit: str
    path: str
    sha256: str | None  # full hex, "prefix...suffix", or None

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.path}"


TIME_REPO = ("bahjat-kawar/time-diffusion", "1d6784a3a46c08716412c0800dd7d18474ef92be")
REFACT_REPO = ("technion-cs-nlp/ReFACT", "8b6df79070565fd1f330664d3590c6908844cdae")
UCE_REPO = ("rohitgandikota/unified-concept-editing", "28c81ed5a3e41277c1a0dc55f738e7ab188e9718")

DATASETS: dict[str, PinnedFile] = {
    "timed_test": PinnedFile(*TIME_REPO, "TIMED_test_set.csv", "6ce40509...2a0"),
    "timed_validation": PinnedFile(*TIME_REPO, "TIMED_validation_set.csv", None),
    "timed_test_filtered_sd14": PinnedFile(*TIME_REPO, "TIMED_test_set_filtered_SD14.csv", None),
    "road_test": PinnedFile(*REFACT_REPO, "road/RoAD_test.csv", "356a051e...976e"),
    "road_validation": PinnedFile(*REFACT_REPO, "road/RoAD_validation.csv", None),
    "i2p": PinnedFile(*UCE_REPO, "data/unsafe-prompts4703.csv", None),
    "professions": PinnedFile(*UCE_REPO, "data/profession_prompts.csv", None),
}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_matches(actual: str, expected: str) -> bool:
    if "..." in expected:
        head, tail = expected.split("...")
        return actual.startswith(head) and actual.endswith(tail)
    return actual == expected


def fetch(name: str, out: Path, allow_download: bool) -> dict:
    """Download dataset `name` to `out` (atomically) and verify it; return its provenance record."""
    if name not in DATASETS:
        raise ConfigError(f"datasets: unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    if not allow_download:
        raise ConfigError(f"allow_download: false, so dataset {name!r} cannot be fetched; "
                          f"set it to true or place the file at {out}")
    pin = DATASETS[name]
    with atomic_path(out) as tmp:
        with urllib.request.urlopen(pin.url, timeout=60) as resp, open(tmp, "wb") as f:
            f.write(resp.read())
        actual = sha256_of(tmp)
        if pin.sha256 and not hash_matches(actual, pin.sha256):
            raise InputError(f"{pin.url}: sha256 {actual} does not match the pinned {pin.sha256}")
    return {"name": name, "url": pin.url, "sha256": actual, "pinned_sha256": pin.sha256}


def verify(path: Path, record_path: Path) -> None:
    """Check a dataset file against the hash recorded when it was fetched."""
    record = json.loads(Path(record_path).read_text())
    actual = sha256_of(path)
    if actual != record["sha256"]:
        raise InputError(f"{path}: sha256 {actual} differs from the one recorded at download ({record['sha256']})")
