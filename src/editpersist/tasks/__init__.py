"""Edit cases by task, from the config's `tasks:` block."""

from __future__ import annotations

from pathlib import Path

from ..downloads import verify
from ..errors import ConfigError
from .cases import TASKS, EditCase
from .formats import FORMATS

# Which dataset formats can feed which task (RoAD rows carry their own Role/Appearance type).
TASK_FORMATS = {"appearance": ("timed", "road"), "role": ("road",), "debias": ("professions",), "unsafe": ("i2p",)}


def _dataset_cases(task: str, cfg: dict) -> list[EditCase]:
    fmt = cfg["dataset"]
    if fmt not in TASK_FORMATS[task]:
        raise ConfigError(f"tasks.{task}.dataset: {fmt!r} cannot feed task {task!r}; expected one of "
                          f"{['toy', *TASK_FORMATS[task]]}")
    if "path" not in cfg:
        raise ConfigError(f"tasks.{task}.path: required for dataset {fmt!r}")
    path = Path(cfg["path"])
    if not path.is_file():
        raise ConfigError(f"tasks.{task}.path: {path} does not exist (fetch it with `snakemake download_datasets`"
                          " and allow_download: true, or copy it there)")
    record = path.with_suffix(".json")
    if record.is_file():  # fetched by the download rule: the file must still be what was fetched
        verify(path, record)
    cases = [c for c in FORMATS[fmt](path) if c.task == task]
    return cases[: cfg["limit"]] if cfg.get("limit") else cases


def load_cases(tasks_cfg: dict) -> dict[str, list[EditCase]]:
    """{task: [EditCase]} for the tasks the config enables."""
    from .toy import toy_cases

    out: dict[str, list[EditCase]] = {}
    for task, cfg in tasks_cfg.items():
        if task not in TASKS:
            raise ConfigError(f"tasks.{task}: unknown task; expected one of {list(TASKS)}")
        out[task] = toy_cases()[task] if cfg.get("dataset", "toy") == "toy" else _dataset_cases(task, cfg)
        if not out[task]:
            raise ConfigError(f"tasks.{task}: the dataset has no edit case for this task")
    return out


def find_case(tasks_cfg: dict, task: str, name: str) -> EditCase:
    for case in load_cases(tasks_cfg).get(task, []):
        if case.name == name:
            return case
    raise ConfigError(f"tasks.{task}: no edit named {name!r}")
