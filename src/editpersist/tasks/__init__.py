"""Edit cases by task, from the config's `tasks:` block."""

from __future__ import annotations

from ..errors import ConfigError
from .cases import TASKS, EditCase


def load_cases(tasks_cfg: dict) -> dict[str, list[EditCase]]:
    """{task: [EditCase]} for the tasks the config enables."""
    from .toy import toy_cases

    out: dict[str, list[EditCase]] = {}
    toy = None
    for task, cfg in tasks_cfg.items():
        if task not in TASKS:
            raise ConfigError(f"tasks.{task}: unknown task; expected one of {list(TASKS)}")
        source = cfg.get("dataset", "toy")
        if source != "toy":
            raise ConfigError(f"tasks.{task}.dataset: {source!r} is not supported yet; expected 'toy'")
        toy = toy or toy_cases()
        out[task] = toy[task]
    return out


def find_case(tasks_cfg: dict, task: str, name: str) -> EditCase:
    for case in load_cases(tasks_cfg).get(task, []):
        if case.name == name:
            return case
    raise ConfigError(f"tasks.{task}: no edit named {name!r}")
