"""Edit cases by task, from the config's `tasks:` block."""

from __future__ import annotations

from pathlib import Path

from ..downloads import verify
from ..config import planning_note
from ..errors import ConfigError, InputError
from .cases import TASKS, EditCase, Probe
from .formats import DEBIAS_PHRASINGS, FORMATS
from .requests import EditRequest, debias_requests

# Which dataset formats can feed which task (RoAD rows carry their own Role/Appearance type).
TASK_FORMATS = {"appearance": ("timed", "road"), "role": ("road",), "debias": ("professions",), "unsafe": ("i2p",)}


# The edit mode each task asks of an editor (placeholders must fit the same editors).
TASK_MODES = {"appearance": "replace", "role": "replace", "debias": "debias", "unsafe": "erase"}


# Probes of one row of each published file, for stand-ins whose image counts must be a real
# run's (the sizing prices generation and scoring from them): a TIMED or RoAD row has a source,
# 5 positives and 5 negatives; a profession of the professions file 10 prompts.
PLANNED_PROBES = {"appearance": 5, "role": 5, "debias": 10}


def planning_cases(task: str, cfg: dict) -> list[EditCase]:
    """Stand-ins for a dataset file that is not there yet, so a dry run can plan the grid
    (job counts, resources) before anything is downloaded. The I2P task is one erase case,
    probed with `max_prompts` prompts; the others need `limit`, the number of edits the study
    will take from the file, and get a published row's probes, each its own prompt. Their
    names say they are placeholders; a real run reads the file and refuses without it."""
    if task == "unsafe":
        if not cfg.get("max_prompts"):
            raise ConfigError(f"tasks.unsafe.max_prompts: {cfg['path']} is not there yet; to plan without it, set "
                              "max_prompts (the number of I2P prompts to probe the erasure with)")
        probes = tuple(Probe(f"placeholder i2p prompt {j}", f"placeholder i2p prompt {j}", "")
                       for j in range(1, cfg["max_prompts"] + 1))
        return [EditCase(task, "planned-001", (EditRequest("placeholder", mode="erase"),),
                         Probe("placeholder", "placeholder", ""), probes, ())]
    if not cfg.get("limit"):
        raise ConfigError(f"tasks.{task}.limit: {cfg['path']} is not there yet; to plan without it, set limit "
                          "(the number of edits to take from the file)")
    return [planned_case(task, i) for i in range(1, cfg["limit"] + 1)]


def planned_case(task: str, i: int) -> EditCase:
    name, k = f"planned-{i:03d}", PLANNED_PROBES[task]
    if task == "debias":
        prof = f"placeholder{i}"
        phrasings = dict.fromkeys([f"a {prof}"] + [t.format(prof) for t in DEBIAS_PHRASINGS])
        prompts = tuple(Probe(f"{prof} prompt {j}", f"{prof} prompt {j}", "") for j in range(1, k + 1))
        return EditCase(task, name, debias_requests(phrasings, prof, ("male", "female"), (0.5, 0.5)),
                        Probe(f"a {prof}", f"a {prof}", f"a {prof}"), prompts)
    src, new = f"placeholder {task} {i}", f"placeholder {task} {i} edited"
    probes = {kind: tuple(Probe(f"{src} {kind} {j}", f"{src} {kind} {j}", f"{new} {kind} {j}") for j in range(1, k + 1))
              for kind in ("positive", "negative")}
    request = EditRequest(src, new, mode=TASK_MODES[task])
    return EditCase(task, name, (request,), Probe(src, src, new), probes["positive"], probes["negative"])


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
