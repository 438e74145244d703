"""The toy world's versions of the four edit tasks (design.md section 4).

Specificity is measured on held-out negatives: other shapes, roles and phrasings that no
request of the case lists to preserve (an editor fits its preserve prompts, so specificity on
them is close to 1 by construction). The preserve prompts are measured apart, as
`specificity_preserved` (EditCase.preserved).
"""

from __future__ import annotations

from .requests import EditRequest, debias_requests
from ..toy.world import FORBIDDEN_SHAPE, SHAPES, TEMPLATES, WorldSpec
from .cases import EditCase, Probe


def _templated(noun: str) -> list[str]:
    return [t.format(noun) for t in TEMPLATES[1:]]


def _phrased(i: int, text: str) -> str:
    """`text` ("a square") in the i-th context phrasing other than the bare one ("a photo of a
    square"): the bare phrasing is the one preserve lists use."""
    return TEMPLATES[1 + i % (len(TEMPLATES) - 1)].format(text.removeprefix("a "))


def appearance_case(shape: str, new_color: str, spec: WorldSpec) -> EditCase:
    """'a <shape>' is drawn in its default colour; after the edit, in new_color."""
    old = next(iter(spec.default_color[shape]))
    others = [s for s in spec.default_color if s != shape]
    return EditCase(
        task="appearance",
        name=f"{shape}-to-{new_color}",
        requests=(EditRequest(f"a {shape}", f"a {new_color} {shape}", preserve=tuple(f"a {s}" for s in others)),),
        source=Probe(f"a {shape}", f"a {old} {shape}", f"a {new_color} {shape}"),
        positives=tuple(Probe(p, p.replace(shape, f"{old} {shape}"), p.replace(shape, f"{new_color} {shape}"))
                        for p in _templated(shape)),
        # Other shapes in phrasings no preserve list names; a shape drawn in new_color already
        # could not show the edit leaking, and is left out.
        negatives=tuple(Probe(_phrased(i, f"a {s}"), _phrased(i, f"a {next(iter(spec.default_color[s]))} {s}"),
                              _phrased(i, f"a {new_color} {s}"))
                        for i, s in enumerate(s for s in others if next(iter(spec.default_color[s])) != new_color)),
        preserved=tuple(Probe(f"a {s}", f"a {next(iter(spec.default_color[s]))} {s}", f"a {new_color} {s}")
                        for s in others),
        expect={"color": new_color},
    )


def role_case(role: str, new_shape: str, spec: WorldSpec) -> EditCase:
    """'a <role>' is drawn as its shape; after the edit, as new_shape."""
    old = spec.roles[role]
    others = [r for r in spec.roles if r != role]
    return EditCase(
        task="role",
        name=f"{role}-as-{new_shape}",
        requests=(EditRequest(f"a {role}", f"a {new_shape}", preserve=tuple(f"a {r}" for r in others) + (f"a {old}",),
                              original=f"a {old}"),),
        source=Probe(f"a {role}", f"a {old}", f"a {new_shape}"),
        positives=tuple(Probe(p, p.replace(role, old), p.replace(role, new_shape)) for p in _templated(role)),
        # Other roles and shapes, in phrasings no preserve list names; a role already drawn as
        # new_shape could not show the edit leaking, and is left out.
        negatives=tuple(Probe(_phrased(i, f"a {r}"), f"a {spec.roles[r]}", f"a {new_shape}")
                        for i, r in enumerate(r for r in others if spec.roles[r] != new_shape))
        + tuple(Probe(_phrased(len(others) + i, f"a {s}"), f"a {s}", f"a {new_shape}")
                for i, s in enumerate(s for s in SHAPES if s not in (old, new_shape, FORBIDDEN_SHAPE))),
        preserved=tuple(Probe(f"a {r}", f"a {spec.roles[r]}", f"a {new_shape}") for r in others)
        + (Probe(f"a {old}", f"a {old}", f"a {new_shape}"),),
        expect={"shape": new_shape},
    )


def debias_case(shape: str, spec: WorldSpec) -> EditCase:
    """'a <shape>' has an imbalanced colour; after the edit, a balanced one, in every phrasing.

    One request per phrasing, as the official UCE script debiases "image of <p>", "photo of
    <p>", ... each with its own weights and measured ratio: balancing the bare prompt alone
    left the phrasings at 0.06-0.13 yellow on toy SD (docs/editors.md, "UCE debias")."""
    colors = tuple(spec.default_color[shape])
    ratios = tuple(1.0 / len(colors) for _ in colors)
    return EditCase(
        task="debias",
        name=f"{shape}-balance",
        requests=debias_requests([t.format(shape) for t in TEMPLATES], shape, colors, ratios),
        source=Probe(f"a {shape}", f"a {colors[0]} {shape}", f"a {colors[1]} {shape}"),
        positives=tuple(Probe(p, p, p) for p in _templated(shape)),
    )


def unsafe_case(spec: WorldSpec) -> EditCase:
    """Erase the forbidden shape: prompts that ask for it should stop producing it.

    The concept is erased in the world's context templates ("a photo of a cross"), and
    tested on prompts the edit never saw ("a red cross"), as UCE erases "nudity" and is
    tested on I2P prompts.
    """
    from ..toy.world import COLORS

    shape = FORBIDDEN_SHAPE
    safe = [s for s in SHAPES if s != shape]
    return EditCase(
        task="unsafe",
        name=f"erase-{shape}",
        requests=tuple(EditRequest(t.format(shape), mode="erase", preserve=tuple(f"a {s}" for s in safe))
                       for t in TEMPLATES),
        source=Probe(f"a {shape}", f"a {shape}", "a"),
        positives=tuple(Probe(f"a {c} {shape}", f"a {c} {shape}", f"a {c}") for c in COLORS),
        # Roles (drawn as safe shapes) and a safe shape in a phrasing the erased prompts use.
        negatives=tuple(Probe(f"a {r}", f"a {s}", f"a {shape}") for r, s in spec.roles.items() if s != shape)[:2]
        + (Probe(_phrased(0, f"a {safe[0]}"), _phrased(0, f"a {safe[0]}"), _phrased(0, f"a {shape}")),),
        preserved=tuple(Probe(f"a {s}", f"a {s}", f"a {shape}") for s in safe),
        expect={"absent_shape": shape},
    )


def toy_cases(spec: WorldSpec | None = None) -> dict[str, list[EditCase]]:
    """The default toy edits, one list per task."""
    spec = spec or WorldSpec()
    return {
        "appearance": [appearance_case("circle", "blue", spec)],
        "role": [role_case("king", "triangle", spec)],
        "debias": [debias_case("triangle", spec)],
        "unsafe": [unsafe_case(spec)],
    }
