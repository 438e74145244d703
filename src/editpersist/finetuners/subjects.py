"""Fine-tune data: DreamBooth subjects (the toy world's, or a folder of real images), and
how each relates to an edit.

A toy subject is a class noun (a shape) drawn with a fixed, distinctive colour; a folder
subject is a set of photos (google/dreambooth's `dataset/<subject>/`). Both are captioned
"a <identifier> <class>", the identifier being the study's (`finetune_data.identifier`, "sks"
by default, DreamBooth's). A subject's relation to an edit:
* related    - the subject's class is the concept the edit changes;
* tangential - (toy only) it shares a shape or colour with the edit's before/after states;
* unrelated  - neither.
"""

from __future__ import annotations

from dataclasses import dataclass

from pathlib import Path

from ..metrics.reader_metrics import text_attributes
from ..tasks.cases import EditCase
from ..toy.render import render_samples
from ..toy.world import Sample
from .data import load_image_folder
from .core import ImageSet

# DreamBooth's identifier when a study names none (finetune_data.identifier defaults to it).
RARE_TOKEN = "sks"


@dataclass(frozen=True)
class ToySubject:
    name: str
    cls: str  # a toy shape
    color: str
    identifier: str = RARE_TOKEN

    @property
    def instance_prompt(self) -> str:
        return f"a {self.identifier} {self.cls}"

    @property
    def class_prompt(self) -> str:
        return f"a {self.cls}"

    @property
    def description(self) -> str:
        """What tells this subject from other members of its class (the judge's fidelity text)."""
        return f"a {self.color} {self.cls}"

    @property
    def reader_attributes(self) -> dict[str, str]:
        return {"color": self.color, "shape": self.cls}

    def images(self, n: int, seed: int, size: int | None = None) -> ImageSet:
        """`n` renders at the toy world's own size (`size` is the model's and equals it)."""
        samples = [Sample(self.instance_prompt, self.color, self.cls)] * n
        return ImageSet(render_samples(samples, seed=seed), [s.caption for s in samples])


@dataclass(frozen=True)
class FolderSubject:
    """Real photos of one subject; `description` (e.g. "a corgi with a red collar") is what
    the CLIP judge must prefer over the class prompt for an image to count as the subject."""

    name: str
    cls: str
    path: str
    description: str
    identifier: str = RARE_TOKEN

    instance_prompt = ToySubject.instance_prompt
    class_prompt = ToySubject.class_prompt
    reader_attributes = None  # real images have no ground-truth reader

    def images(self, n: int, seed: int, size: int | None = None) -> ImageSet:
        """Every photo of the folder, as DreamBooth trains on all of them (3-6); `n` is the toy
        world's count and does not apply to a fixed photo set."""
        if size is None:
            raise ValueError("a folder subject needs the model's resolution")
        images = load_image_folder(Path(self.path), size)
        return ImageSet(images, [self.instance_prompt] * len(images))


def make_subject(spec: dict) -> ToySubject | FolderSubject:
    """The subject a config entry (as SUBJECTS in the workflow holds it) describes."""
    identifier = spec.get("identifier", RARE_TOKEN)
    if "path" in spec:
        return FolderSubject(spec["name"], spec["cls"], spec["path"], spec["description"], identifier)
    return ToySubject(spec["name"], spec["cls"], spec["color"], identifier)


def edit_attributes(case: EditCase) -> tuple[set[str], set[str]]:
    """Shapes and colours that the edit's probes name before and after."""
    shapes, colors = set(), set()
    for text in (case.source.prompt, case.source.original, case.source.edited):
        attrs = text_attributes(text)
        shapes |= {attrs["shape"]} if "shape" in attrs else set()
        colors |= {attrs["color"]} if "color" in attrs else set()
    return shapes, colors


def relation(subject: ToySubject | FolderSubject, case: EditCase) -> str:
    concept = case.source.prompt.split()[-1]  # the edited noun: "circle", or a role such as "king"
    if subject.cls == concept:
        return "related"
    if isinstance(subject, FolderSubject):
        return "unrelated"
    shapes, colors = edit_attributes(case)
    if subject.cls in shapes or subject.color in colors:
        return "tangential"
    return "unrelated"
