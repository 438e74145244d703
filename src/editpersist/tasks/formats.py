"""Loaders of the real study's edit datasets (design.md section 7), as EditCases.

Every loader checks the columns it needs and fails with one line naming the
file, the row and the column at fault.
"""

from __future__ import annotations

import csv
import re
from itertools import islice
from pathlib import Path
from typing import Iterator

from .requests import EditRequest, attribute_prompt, debias_requests
from ..errors import InputError
from .cases import EditCase, Probe


def _rows(path: Path, required: list[str]) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: dataset file not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise InputError(f"{path}: missing column {missing[0]!r} (header: {', '.join(header) or 'empty'})")
        rows = list(reader)
    if not rows:
        raise InputError(f"{path}: no data rows")
    return rows


def _cell(path: Path, row: dict, n: int, col: str) -> str:
    value = (row.get(col) or "").strip()
    if not value:
        raise InputError(f"{path}: row {n}, column {col!r} is empty")
    return value


def slug(text: str, n: int) -> str:
    """A path-safe edit name: row number plus the first words of the text."""
    words = re.sub(r"[^A-Za-z0-9]+", "-", text.lower()).strip("-")
    return f"{n:03d}-{words[:40].rstrip('-')}"


def first_cases(cases: Iterator[EditCase], task: str | None, limit: int | None) -> list[EditCase]:
    """The first `limit` cases of `task` (None: every task), in file order. Rows past them are
    not read, so a study of the first edits of a file does not fail on a bad row far below."""
    return list(islice((c for c in cases if task is None or c.task == task), limit))


def load_timed(path: Path, task: str | None = None, limit: int | None = None) -> list[EditCase]:
    """TIMED: old,new,positive1,gt1,...,positive5,gt5,negative1,gn1,...,negative5,gn5."""
    return first_cases(_timed_cases(path), task, limit)


def _timed_cases(path: Path) -> Iterator[EditCase]:
    cols = ["old", "new"] + [f"{k}{i}" for i in range(1, 6) for k in ("positive", "gt")] \
        + [f"{k}{i}" for i in range(1, 6) for k in ("negative", "gn")]
    for n, row in enumerate(_rows(path, cols), start=1):
        old, new = _cell(path, row, n, "old"), _cell(path, row, n, "new")
        pos = tuple(Probe(_cell(path, row, n, f"positive{i}"), _cell(path, row, n, f"positive{i}"),
                          _cell(path, row, n, f"gt{i}")) for i in range(1, 6))
        neg = tuple(Probe(_cell(path, row, n, f"negative{i}"), _cell(path, row, n, f"negative{i}"),
                          _cell(path, row, n, f"gn{i}")) for i in range(1, 6))
        yield EditCase("appearance", slug(old, n), (EditRequest(old, new),), Probe(old, old, new), pos, neg)


def load_road(path: Path, task: str | None = None, limit: int | None = None) -> list[EditCase]:
    """RoAD: Type,Prompt,Oracle,Old,New, Positive{i},[Positive_oracle{i}],Positive_old{i},Positive_new{i},
    Negative{i},Negative_new{i}. The validation file has no Positive_oracle columns."""
    return first_cases(_road_cases(path), task, limit)


def _road_cases(path: Path) -> Iterator[EditCase]:
    cols = ["Type", "Prompt", "Old", "New"] + [f"{k}{i}" for i in range(1, 6)
                                              for k in ("Positive", "Positive_old", "Positive_new", "Negative",
                                                        "Negative_new")]
    for n, row in enumerate(_rows(path, cols), start=1):
        kind = _cell(path, row, n, "Type")
        if kind not in ("Role", "Appearance"):
            raise InputError(f"{path}: row {n}, column 'Type' is {kind!r}; expected 'Role' or 'Appearance'")
        prompt, old, new = (_cell(path, row, n, c) for c in ("Prompt", "Old", "New"))
        pos = tuple(Probe(_cell(path, row, n, f"Positive{i}"), _cell(path, row, n, f"Positive_old{i}"),
                          _cell(path, row, n, f"Positive_new{i}")) for i in range(1, 6))
        neg = tuple(Probe(_cell(path, row, n, f"Negative{i}"), _cell(path, row, n, f"Negative{i}"),
                          _cell(path, row, n, f"Negative_new{i}")) for i in range(1, 6))
        yield EditCase(kind.lower(), slug(prompt, n), (EditRequest(prompt, new, original=old),), Probe(prompt, old, new),
                       pos, neg)


def load_i2p(path: Path, task: str | None = None, limit: int | None = None, concept: str = "nudity",
             category: str | None = "sexual", min_nudity_percentage: float = 50.0,
             max_prompts: int | None = None) -> list[EditCase]:
    """I2P: prompt,categories,nudity_percentage,evaluation_seed. One case: erase `concept`,
    probed with the prompts of `category` (None: every category) whose nudity percentage is at
    least `min_nudity_percentage`, the first `max_prompts` of them in file order. I2P has no
    negative prompts: the collateral damage of the erasure is measured on the quality captions
    (clip_score, fd_judge, kd_judge), as the published study measures it on COCO captions."""
    rows = _rows(path, ["prompt", "categories", "nudity_percentage", "evaluation_seed"])
    probes = []
    for n, row in enumerate(rows, start=1):
        try:
            pct = float(row["nudity_percentage"])
        except ValueError:
            raise InputError(f"{path}: row {n}, column 'nudity_percentage' is not a number") from None
        categories = [c.strip() for c in (row["categories"] or "").split(",")]
        if (category is None or category in categories) and pct >= min_nudity_percentage:
            p = " ".join(_cell(path, row, n, "prompt").split())
            probes.append(Probe(p, p, p))
    if not probes:
        raise InputError(f"{path}: no prompt of category {category!r} with nudity_percentage >= "
                         f"{min_nudity_percentage}")
    probes = probes[:max_prompts] if max_prompts else probes
    case = EditCase("unsafe", f"erase-{slug(concept, 0)[4:]}", (EditRequest(concept, mode="erase"),),
                    Probe(concept, concept, ""), tuple(probes), (), {"absent_concept": concept})
    return first_cases(iter([case]), task, limit)


def with_article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


# The phrasings the official UCE debias script edits for every profession, each one its own
# request with its own weights and measured ratio.
DEBIAS_PHRASINGS = ("image of {}", "photo of {}", "portrait of {}", "picture of {}", "{}")


def load_professions(path: Path, task: str | None = None, limit: int | None = None,
                     attributes: tuple[str, ...] = ("male", "female"),
                     ratios: tuple[float, ...] = (0.5, 0.5)) -> list[EditCase]:
    """Profession prompts: case_number,prompt,evaluation_seed,profession; one debias case per
    profession, in file order, balanced over `attributes`, which are written next to the
    profession in every prompt ('image of female attendant'), so every prompt must name its
    profession. The edit balances the source ('an attendant') and DEBIAS_PHRASINGS."""
    rows = _rows(path, ["case_number", "prompt", "evaluation_seed", "profession"])
    by_prof: dict[str, list[str]] = {}
    for n, row in enumerate(rows, start=1):
        prof, prompt = _cell(path, row, n, "profession"), _cell(path, row, n, "prompt")
        try:
            attribute_prompt(attributes[0], prompt, prof)
        except InputError:
            raise InputError(f"{path}: row {n}, column 'prompt' ({prompt!r}) does not name its profession "
                             f"{prof!r}") from None
        by_prof.setdefault(prof, []).append(prompt)
    cases = []
    for i, (prof, prompts) in enumerate(by_prof.items(), start=1):
        source = with_article(prof)
        phrasings = dict.fromkeys([source] + [t.format(prof) for t in DEBIAS_PHRASINGS])
        requests = debias_requests(phrasings, prof, attributes, ratios)
        cases.append(EditCase("debias", slug(prof, i), requests, Probe(source, source, source),
                              tuple(Probe(p, p, p) for p in prompts)))
    return first_cases(iter(cases), task, limit)


FORMATS = {"timed": load_timed, "road": load_road, "i2p": load_i2p, "professions": load_professions}
