"""The study grid: models x editors x edit cases x fine-tuners x fine-tune subjects.

Every file the workflow makes follows from the grid's cells. Shared work is named once:
the unedited control `base/ft/<finetuner>/<subject>` per (model, fine-tuner, subject),
one edited state per (model, editor, task, edit), and the per-model statistics and images
of the base. `naive_job_counts` prices the same grid without that sharing, for the
benchmarks (BENCHMARKS.md, "Planning the paper grid"): each cell then edits, fine-tunes and
generates on its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .editors import EDITORS
from .errors import ConfigError
from .states import BASE, State
from .tasks.cases import EditCase

CELL_KEYS = ("model", "editor", "task", "edit", "finetuner", "subject")


@dataclass(frozen=True)
class GridCell:
    """One cell; its fine-tune is repeated with each of `seeds` (base_ft and edited_ft share
    each seed, so every seed gives one paired difference)."""

    model: str
    editor: str
    task: str
    edit: str
    finetuner: str
    subject: str
    seeds: tuple[int, ...] = (0,)

    @property
    def edited(self) -> State:
        return State.edited(self.editor, self.task, self.edit)

    @property
    def start(self) -> str:
        """The edited state, as the `start` wildcard of the fine-tune rule."""
        return self.edited.name

    # Each group names every seed's state at once (one fine-tune job, one generation job).
    @property
    def base_ft_group(self) -> str:
        return self._base_ft.name

    @property
    def edited_ft_group(self) -> str:
        return self._edited_ft.name

    @property
    def reedit_group(self) -> str:
        return self._edited_ft.reedited().name

    @property
    def transfer_group(self) -> str:
        return self._transfer.name

    # The member states of each group, one per seed.
    @property
    def base_fts(self) -> list[str]:
        return self._members(self._base_ft)

    @property
    def edited_fts(self) -> list[str]:
        return self._members(self._edited_ft)

    @property
    def reedited(self) -> list[str]:
        return self._members(self._edited_ft.reedited())

    @property
    def transfers(self) -> list[str]:
        return self._members(self._transfer)

    @property
    def _base_ft(self) -> State:
        return BASE.finetuned(self.finetuner, self.subject)

    @property
    def _edited_ft(self) -> State:
        return self.edited.finetuned(self.finetuner, self.subject)

    @property
    def _transfer(self) -> State:
        return self.edited.transferred(self.finetuner, self.subject)

    def _members(self, group: State) -> list[str]:
        return [s.name for s in group.members(self.seeds)]

    def record(self) -> dict:
        """The cell as plain data (a rule parameter Snakemake can compare between runs)."""
        return {**asdict(self), "seeds": list(self.seeds)}

    @classmethod
    def from_record(cls, record: dict) -> GridCell:
        return cls(**{**record, "seeds": tuple(record["seeds"])})


def editor_fits(editor: str, case: EditCase) -> bool:
    """TIME and ReFACT only replace concepts: they have no erase or debias mode."""
    return all(r.mode in EDITORS[editor].modes for r in case.requests)


def is_excluded(cell: GridCell, rules: list[dict]) -> bool:
    """A cell is left out when it matches every key of one `exclude:` entry (a list value
    matches any of its items)."""
    return any(all(getattr(cell, k) in (v if isinstance(v, list) else [v]) for k, v in rule.items())
               for rule in rules)


def study_cells(config: dict, cases: dict[str, list[EditCase]]) -> list[GridCell]:
    """The persistence table's cells, in a fixed order, without the excluded ones."""
    rules = config.get("exclude", [])
    cells = [
        GridCell(model["name"], editor, task, case.name, finetuner, subject["name"],
                 finetune_seeds(config, model["name"], finetuner))
        for model in config["models"]
        for editor in config["editors"]
        for task, task_cases in cases.items()
        for case in task_cases
        if editor_fits(editor, case)
        for finetuner in config["finetuners"]
        for subject in config["finetune_data"]["subjects"]
    ]
    return [c for c in cells if not is_excluded(c, rules)]


def studied_finetunes(config: dict, cases: dict[str, list[EditCase]]) -> set[tuple[str, str]]:
    """The (model, fine-tuner) pairs at least one of the study's cells fine-tunes with."""
    return {(c.model, c.finetuner) for c in study_cells(config, cases)}


def finetuner_settings(config: dict, model: str, finetuner: str) -> dict:
    """A fine-tuner's settings for one model: the `finetuners:` block's, with the model
    entry's own `finetuners.<name>` keys in their place (a small model may need more steps
    or another learning rate than a large one to learn the same subject)."""
    entry = next(m for m in config["models"] if m["name"] == model)
    return {**config["finetuners"][finetuner], **entry.get("finetuners", {}).get(finetuner, {})}


def finetune_seeds(config: dict, model: str, finetuner: str) -> tuple[int, ...]:
    return tuple(finetuner_settings(config, model, finetuner).get("seeds", [0]))


def no_cells(config: dict) -> None:
    raise ConfigError(f"exclude: the grid selects no cell ({len(config.get('exclude', []))} exclusions remove every "
                      "combination of models, editors, tasks, fine-tuners and subjects)")


def unique(items):
    return list(dict.fromkeys(items))


def edit_starts(cells: list[GridCell], model: str) -> list[str]:
    return unique(c.start for c in cells if c.model == model)


def finetune_states(cells: list[GridCell], model: str) -> list[str]:
    """Every fine-tuned state of a model: each control once, then one per edited state."""
    mine = [c for c in cells if c.model == model]
    return unique([s for c in mine for s in c.base_fts] + [s for c in mine for s in c.edited_fts])


def finetune_groups(cells: list[GridCell], model: str) -> list[str]:
    """A model's fine-tune jobs: each control once, then one per edited state (all seeds each)."""
    mine = [c for c in cells if c.model == model]
    return unique([c.base_ft_group for c in mine] + [c.edited_ft_group for c in mine])


def shared_job_counts(cells: list[GridCell]) -> dict[str, int]:
    """Jobs of the grid's main stages as the workflow plans them (shared work once; a job
    covers every fine-tune seed of its state)."""
    models = unique(c.model for c in cells)
    edits = sum(len(edit_starts(cells, m)) for m in models)
    fts = sum(len(finetune_groups(cells, m)) for m in models)
    return {"edit": edits, "finetune": fts, "generate_states": len(models) + fts + edits}


def naive_job_counts(cells: list[GridCell]) -> dict[str, int]:
    """The same stages if every cell ran alone: its own edit, both fine-tunes (control and
    edited) and all four states' images (base, edited, base_ft, edited_ft)."""
    return {"edit": len(cells), "finetune": 2 * len(cells), "generate_states": 4 * len(cells)}
