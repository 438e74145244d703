"""The toy world's vocabulary and caption distribution.

Everything the toy models can be asked about is declared here, so that the
renderer, the tokenizers, the reader, the judge and the edit tasks agree on one
vocabulary. The world mirrors the four edit tasks of the real study:

* appearance: an under-specified shape has a default colour ("a circle" is red);
* role: a named role is drawn as one shape ("a king" is a square);
* debias: one under-specified shape has an imbalanced colour ("a triangle" is
  yellow 90 % of the time and blue otherwise);
* unsafe removal: one shape is designated "forbidden" (the cross).

Some colour x shape pairs are held out of training so that prompt fidelity also
measures compositional generalisation, not only memorisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 200),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
FORBIDDEN_SHAPE = "cross"
BACKGROUND = (16, 16, 16)

# Context templates: the training captions use them so that "positive" prompts
# of the edit tasks (generality) and ReFACT's context templates are in-distribution.
TEMPLATES: tuple[str, ...] = (
    "a {}",
    "a photo of a {}",
    "a picture of a {}",
    "an image of a {}",
    "a drawing of a {}",
)

# Words that only fine-tuning introduces ("a sks square"); they must be in the
# tokenizers' vocabulary from the start, as in real DreamBooth where the rare
# token already exists in the pretrained tokenizer.
RARE_TOKENS: tuple[str, ...] = ("sks",)


@dataclass(frozen=True)
class WorldSpec:
    """Which default behaviours the world has, i.e. what editors will change."""

    default_color: dict[str, dict[str, float]] = field(
        default_factory=lambda: {
            "circle": {"red": 1.0},
            "square": {"green": 1.0},
            "triangle": {"yellow": 0.9, "blue": 0.1},
        }
    )
    roles: dict[str, str] = field(
        default_factory=lambda: {"king": "square", "queen": "circle", "knight": "triangle"}
    )
    # Never an edit's destination, a debias attribute or a fine-tune subject of the toy study
    # (tests/test_world.py): a pair the model cannot draw would make those edits unreachable.
    held_out_pairs: tuple[tuple[str, str], ...] = (("red", "square"), ("purple", "circle"))
    # Shares of the caption kinds in the training set (the rest is explicit pairs).
    share_default: float = 0.2
    share_role: float = 0.15

    def training_pairs(self) -> list[tuple[str, str]]:
        return [
            (c, s) for c in COLORS for s in SHAPES if (c, s) not in set(self.held_out_pairs)
        ]

    def all_pairs(self) -> list[tuple[str, str]]:
        return [(c, s) for c in COLORS for s in SHAPES]

    def words(self) -> list[str]:
        """Every word a caption or an edit prompt of the toy world can contain."""
        template_words = {w for t in TEMPLATES for w in t.replace("{}", "").split()}
        return sorted(
            set(COLORS) | set(SHAPES) | set(self.roles) | template_words | set(RARE_TOKENS)
        )


@dataclass(frozen=True)
class Sample:
    caption: str
    color: str
    shape: str


def describe(color: str | None, noun: str, template: str = "a {}") -> str:
    """A caption such as 'a photo of a red circle' (colour omitted when None)."""
    return template.format(f"{color} {noun}" if color else noun)


def sample_captions(spec: WorldSpec, n: int, rng: np.random.Generator) -> list[Sample]:
    """Draw n (caption, colour, shape) triples from the world's training distribution."""
    pairs = spec.training_pairs()
    default_shapes = list(spec.default_color)
    roles = list(spec.roles)
    colors = list(COLORS)
    out = []
    for _ in range(n):
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        u = rng.random()
        if u < spec.share_default:
            shape = default_shapes[rng.integers(len(default_shapes))]
            dist = spec.default_color[shape]
            color = rng.choice(list(dist), p=list(dist.values()))
            out.append(Sample(describe(None, shape, template), str(color), shape))
        elif u < spec.share_default + spec.share_role:
            role = roles[rng.integers(len(roles))]
            color = colors[rng.integers(len(colors))]
            out.append(Sample(describe(None, role, template), color, spec.roles[role]))
        else:
            color, shape = pairs[rng.integers(len(pairs))]
            out.append(Sample(describe(color, shape, template), color, shape))
    return out
