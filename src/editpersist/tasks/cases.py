"""Edit cases: what to edit and how to tell whether the edit took.

One EditCase is one row of a TIMED/RoAD-style file, one I2P concept, one
profession, or one toy-world edit. The request says what the editor does; the
prompt lists say what evaluation generates and what each image should show.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .requests import EditRequest

TASKS = ("appearance", "role", "debias", "unsafe")


@dataclass(frozen=True)
class Probe:
    """A prompt, the text an edited image should match, and the text an unedited one matches.

    For efficacy/generality images should match `edited` after the edit; for specificity
    (negative prompts) they should still match `original`.
    """

    prompt: str
    original: str
    edited: str


@dataclass(frozen=True)
class EditCase:
    task: str
    name: str  # safe in paths
    requests: tuple[EditRequest, ...]  # one edit job applies them together
    source: Probe  # efficacy
    positives: tuple[Probe, ...] = ()  # generality
    negatives: tuple[Probe, ...] = ()  # specificity
    # Ground truth for the toy world's reader: attribute -> value expected after the edit.
    expect: dict = field(default_factory=dict)
    # specificity_preserved: prompts an editor was asked to keep (its requests' preserve lists),
    # where those are measured apart from `negatives` (the toy tasks: negatives there are prompts
    # no request names, so an editor cannot fit them).
    preserved: tuple[Probe, ...] = ()

    @property
    def debias(self) -> EditRequest:
        """The request that says what a debias case balances: attributes, desired ratios and
        the concept they describe (the metric reads them from here, as the editor does)."""
        found = [r for r in self.requests if r.mode == "debias"]
        if not found:
            raise ValueError(f"edit case {self.task}.{self.name} has no debias request")
        return found[0]

    @property
    def target(self) -> Probe | None:
        """What a replace edit aims at, as a prompt of its own ("a blue circle" for circle -> blue;
        "a triangle" for a king drawn as one). A fine-tune after which even the unedited model no
        longer draws it has erased the target itself, not the edit (evaluation's target_reach).
        None for edits that aim at no concept (debias, erase)."""
        found = [r for r in self.requests if r.mode == "replace"]
        if not found:
            return None
        r = next((r for r in found if r.source == self.source.prompt), found[0])
        return Probe(r.target, r.before, r.target)


def case_record(case: EditCase) -> dict:
    """The case as plain data (dicts, tuples, strings, numbers), as the workflow's rule params
    carry it: Snakemake's params trigger compares their repr, so every field of the case and its
    requests, whatever its dataclass prints, reruns the jobs that read it when it changes."""
    return asdict(case)


def _probe(record: dict) -> Probe:
    return Probe(**record)


def case_from_record(record: dict) -> EditCase:
    """The EditCase `case_record` wrote (lists read back as tuples)."""
    requests = tuple(EditRequest(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in r.items()})
                     for r in record["requests"])
    return EditCase(record["task"], record["name"], requests, _probe(record["source"]),
                    positives=tuple(map(_probe, record["positives"])), negatives=tuple(map(_probe, record["negatives"])),
                    expect=dict(record["expect"]), preserved=tuple(map(_probe, record["preserved"])))


def cases_record(cases: dict[str, list[EditCase]]) -> dict[str, list[dict]]:
    """Every task's cases as plain data (case_record)."""
    return {task: [case_record(c) for c in task_cases] for task, task_cases in cases.items()}


def cases_from_record(record: dict) -> dict[str, list[EditCase]]:
    return {task: [case_from_record(c) for c in task_cases] for task, task_cases in record.items()}
