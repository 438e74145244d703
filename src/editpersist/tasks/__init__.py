"""Edit cases by task, from the config's `tasks:` block."""

from __future__ import annotations

from pathlib import Path

from ..downloads import verify
from .requests import EditRequest
from ..config import planning_note
from ..errors import ConfigError, InputError
from .cases import TASKS, EditCase, Probe
from .formats import FORMATS

# Which dataset formats can feed which task (RoAD rows carry their own Role/Appearance type).
TASK_FORMATS = {"appearance": ("timed", "road"), "role": ("road",), "debias": ("professions",), "unsafe": ("i2p",)}


# The edit mode each task asks of an editor (placeholders must fit the same editors).
TASK_MODES = {"appearance": "replace", "role": "replace", "debias": "debias", "unsafe": "erase"}


def planning_cases(task: str, cfg: dict) -> list[EditCase]:
    """Stand-ins for a dataset file that is not there yet, so a dry run can plan the grid
    (job counts, resources) before anything is downloaded. The I2P task is one erase case;
    the others need `limit`, the number of edits the study will take from the file. Their
    names say they are placeholders; a real run reads the file and refuses without it."""
    if task == "unsafe":
        n = 1
    elif cfg.get("limit"):
        n = cfg["limit"]
    else:
        raise ConfigError(f"tasks.{task}.limit: {cfg['path']} is not there yet; to plan without it, set limit "
                          "(the number of edits to take from the file)")
    mode = TASK_MODES[task]
    return [EditCase(task, f"planned-{i:03d}", (EditRequest("placeholder", "placeholder", mode=mode),),
                     Probe("placeholder", "placeholder", "placeholder")) for i in range(1, n + 1)]


def _dataset_cases(task: str, cfg: dict, planning: bool = False) -> list[EditCase]:
    fmt = cfg["dataset"]
    if fmt not in TASK_FORMATS[task]:
        raise ConfigError(f"tasks.{task}.dataset: {fmt!r} cannot feed task {task!r}; expected one of "
                          f"{['toy', *TASK_FORMATS[task]]}")
    if "path" not in cfg:
        raise ConfigError(f"tasks.{task}.path: required for dataset {fmt!r}")
    path = Path(cfg["path"])
    if not path.is_file() and planning:
        planning_note(f"tasks.{task}.path: {path} does not exist; placeholder edits stand in for its rows")
        return planning_cases(task, cfg)
    if not path.is_file():
        raise ConfigError(f"tasks.{task}.path: {path} does not exist (fetch it with `snakemake download_datasets`"
                          " and allow_download: true, or copy it there)")
    record = path.with_suffix(".json")
    if record.is_file():  # fetched by the download rule: the file must still be what was fetched
        verify(path, record)
    options = {k: v for k, v in cfg.items() if k not in ("dataset", "path", "limit")}
    if options and fmt != "i2p":
        raise ConfigError(f"tasks.{task}.{next(iter(options))}: only the i2p dataset takes this key")
    try:
        return FORMATS[fmt](path, task=task, limit=cfg.get("limit"), **options)
    except InputError as e:  # the file's row and column, behind the key that named the file
        raise ConfigError(f"tasks.{task}.path: {e}") from e


def load_cases(tasks_cfg: dict, planning: bool = False) -> dict[str, list[EditCase]]:
    """{task: [EditCase]} for the tasks the config enables. `planning` (a dry run) accepts
    dataset files that do not exist yet (see planning_cases)."""
    from .toy import toy_cases

    out: dict[str, list[EditCase]] = {}
    for task, cfg in tasks_cfg.items():
        if task not in TASKS:
            raise ConfigError(f"tasks.{task}: unknown task; expected one of {list(TASKS)}")
        out[task] = toy_cases()[task] if cfg.get("dataset", "toy") == "toy" else _dataset_cases(task, cfg, planning)
        if not out[task]:
            raise ConfigError(f"tasks.{task}: the dataset has no edit case for this task")
    return out


def case_named(cases: dict[str, list[EditCase]], task: str, name: str) -> EditCase:
    """The case `name` of `task` among loaded cases (load_cases)."""
    for case in cases.get(task, []):
        if case.name == name:
            return case
    raise ConfigError(f"tasks.{task}: no edit named {name!r}")
