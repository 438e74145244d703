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

# A made-up filler word is 1-3 pieces, each a letter or a proper part (two letters or more) of
# a vocabulary word: letters train the rows of single letters, parts train the rows of the
# letter groups the tokenizers merge on the way to whole words ("cir", "iang").
FILLER_LETTERS = "abcdefghijklmnopqrstuvwxyz"
FILLER_PIECES = (1, 3)


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
class FillerConfig:
    """Filler words: a word that does not describe the image, inserted into a share of the
    training captions, so that every token row the toy tokenizers give lower-case words is
    trained, as web text trains every row of real CLIP and T5. A rare word ("sks") then has a
    learned state before a fine-tune binds it, and so has any lower-case identifier a study
    picks, whose pieces are letters and letter groups the fillers train."""

    share: float = 0.0  # of the captions that carry one filler
    rare_share: float = 0.0  # of the fillers that are a rare vocabulary word, not a made-up one


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


def filler_word(spec: WorldSpec, rng: np.random.Generator, rare_share: float) -> str:
    """A rare vocabulary word, or a made-up word (FILLER_PIECES) that contains no colour, shape
    or role, so that a filler never names what the image shows."""
    if rng.random() < rare_share:
        return RARE_TOKENS[rng.integers(len(RARE_TOKENS))]
    words = spec.words()
    described = [*COLORS, *SHAPES, *spec.roles]
    parts = sorted({w[i:j] for w in words for i in range(len(w)) for j in range(i + 2, len(w) + 1)} - set(words))
    while True:
        pieces = [FILLER_LETTERS[rng.integers(len(FILLER_LETTERS))] if rng.random() < 0.5
                  else parts[rng.integers(len(parts))] for _ in range(rng.integers(FILLER_PIECES[0], FILLER_PIECES[1] + 1))]
        word = "".join(pieces)
        if len(word) > 1 and not any(d in word for d in described):
            return word


def insert_word(caption: str, word: str, rng: np.random.Generator) -> str:
    """`caption` with `word` at a uniformly drawn word boundary (first and last included)."""
    words = caption.split()
    at = rng.integers(len(words) + 1)
    return " ".join(words[:at] + [word] + words[at:])


def add_fillers(samples: list[Sample], spec: WorldSpec, cfg: FillerConfig,
                rng: np.random.Generator) -> list[Sample]:
    """The samples with a filler word in each caption drawn with probability `cfg.share`; colour
    and shape (so the images) are unchanged. Its own generator keeps the captions' draws apart."""
    out = []
    for s in samples:
        if rng.random() < cfg.share:
            s = Sample(insert_word(s.caption, filler_word(spec, rng, cfg.rare_share), rng), s.color, s.shape)
        out.append(s)
    return out
