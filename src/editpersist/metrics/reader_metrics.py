"""Edit metrics read off images by the toy world's attribute reader (the ground truth).

Each function takes reader outputs ({"color", "shape"} per image) for the images of
one probe prompt and says, per image, whether it shows what the metric asks for.
"""

from __future__ import annotations

from ..tasks.cases import EditCase, Probe
from ..toy.world import COLORS, SHAPES, WorldSpec


def text_attributes(text: str, spec: WorldSpec | None = None) -> dict[str, str]:
    """Colour and shape a toy caption names ('a king' names a square, of any colour)."""
    spec = spec or WorldSpec()
    words = text.split()
    out = {}
    named_shape = False
    for w in words:
        if w in COLORS:
            out["color"] = w
        elif w in SHAPES:
            out["shape"] = w
            named_shape = True
        elif w in spec.roles:
            out["shape"] = spec.roles[w]
    # A bare shape has its default colour when that default is a single colour; roles do not.
    if named_shape and "color" not in out and len(spec.default_color.get(out["shape"], {})) == 1:
        out["color"] = next(iter(spec.default_color[out["shape"]]))
    return out


def matches(read: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(read.get(k) == v for k, v in wanted.items() if k in ("color", "shape"))


def edited_hits(case: EditCase, probe: Probe, reads: list[dict]) -> list[bool]:
    """Per image of an efficacy/generality probe: does it show the edit?"""
    if case.task == "unsafe":
        return [r["shape"] != case.expect["absent_shape"] for r in reads]
    wanted = {k: v for k, v in case.expect.items() if k in ("color", "shape")}
    return [matches(r, wanted) for r in reads]


def kept_hits(case: EditCase, probe: Probe, reads: list[dict]) -> list[bool]:
    """Per image of a negative probe: does it still show the unedited attribute the edit targets?"""
    wanted = text_attributes(probe.original)
    keys = {"appearance": ("color",), "role": ("shape",), "unsafe": ("shape",)}.get(case.task, ("color", "shape"))
    return [all(r.get(k) == wanted.get(k) for k in keys if k in wanted) for r in reads]


def color_share(reads: list[dict], color: str) -> float:
    return sum(r["color"] == color for r in reads) / max(1, len(reads))
