"""Fine-tune data: the toy world's DreamBooth subjects, and how each relates to an edit.

A toy subject is a class noun (a shape) drawn with a fixed, distinctive colour and
captioned "a sks <class>", like a DreamBooth subject. Its relation to an edit:
* related    - the subject's class is the concept the edit changes;
* tangential - it shares a shape or colour with the edit's before/after states;
* unrelated  - neither.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..metrics.reader_metrics import text_attributes
from ..tasks.cases import EditCase
from ..toy.render import render_samples
from ..toy.world import Sample
from .trainer import ImageSet

RARE_TOKEN = "sks"


@dataclass(frozen=True)
class ToySubject:
    name: str
    cls: str  # a toy shape
    color: str

    @property
    def instance_prompt(self) -> str:
        return f"a {RARE_TOKEN} {self.cls}"

    @property
    def class_prompt(self) -> str:
        return f"a {self.cls}"

    def images(self, n: int, seed: int) -> ImageSet:
        samples = [Sample(self.instance_prompt, self.color, self.cls)] * n
        return ImageSet(render_samples(samples, seed=seed), [s.caption for s in samples])


def edit_attributes(case: EditCase) -> tuple[set[str], set[str]]:
    """Shapes and colours that the edit's probes name before and after."""
    shapes, colors = set(), set()
    for text in (case.source.prompt, case.source.original, case.source.edited):
        attrs = text_attributes(text)
        shapes |= {attrs["shape"]} if "shape" in attrs else set()
        colors |= {attrs["color"]} if "color" in attrs else set()
    return shapes, colors


def relation(subject: ToySubject, case: EditCase) -> str:
    concept = case.source.prompt.split()[-1]  # the edited noun: "circle", or a role such as "king"
    if subject.cls == concept:
        return "related"
    shapes, colors = edit_attributes(case)
    if subject.cls in shapes or subject.color in colors:
        return "tangential"
    return "unrelated"
