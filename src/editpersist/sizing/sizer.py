"""One sizer per workflow run: the config's sizing settings, the footprint cache and every
job sized so far. The workflow asks it for each real model's job (workflow/rules/common.smk);
`python -m editpersist.bench size` reads back what it sized during a dry run.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..io import atomic_path, write_json
from . import footprint as fp
from .plan import build_work
from .resources import SizedJob, size_to_fit, size_work
from .settings import sizing_settings

# The published architecture each family is sized at unless a model entry names another
# (`models[].architecture`).
DEFAULT_ARCHITECTURE = {"sd": "sd14", "sdxl": "sdxl", "flux": "flux-schnell"}
# Footprints of the shapes the shipped configs plan (config/paper.yaml, config/pilot.yaml),
# measured by `python -m editpersist.bench size` and committed, so planning those grids traces
# nothing; a user's other shapes are traced once and kept in the run's own cache.
SHIPPED_FOOTPRINTS = Path(__file__).parent / "footprints.json"
# Set by `bench size`: the dry run writes every job it sized there when it exits, and keeps the
# footprints it traced in the caller's cache rather than its scratch directory's.
REPORT_ENV = "EDITPERSIST_SIZING_REPORT"
FOOTPRINTS_ENV = "EDITPERSIST_FOOTPRINTS"


def architecture_of(model: dict) -> str:
    return model.get("architecture") or DEFAULT_ARCHITECTURE[model["family"]]


def job_key(wildcards) -> str:
    """A job's name in the sizing table: its wildcard values in the rule's order."""
    return "/".join(str(v) for v in wildcards)


class GridSizer:
    def __init__(self, config: dict, cache: Path | None = None):
        self.config = config
        self.settings = sizing_settings(config)
        self.footprints = fp.FootprintCache(os.environ.get(FOOTPRINTS_ENV) or cache)
        shipped = fp.FootprintCache(SHIPPED_FOOTPRINTS)
        self.footprints.entries = {**shipped.entries, **self.footprints.entries}
        self._known = set(self.footprints.entries)
        self.models = {m["name"]: m for m in config["models"]}
        self.sized: dict[tuple[str, str], SizedJob] = {}
        self.works: list = []  # every Work sized, for the footprints a report lists

    def size(self, rule: str, key: str, model: str, record: dict) -> SizedJob:
        """The job's figures (computed once per job), with the knobs it needs to fit."""
        if (rule, key) not in self.sized:
            arch = architecture_of(self.models[model])
            def build(knobs):
                work = build_work(rule, key, model, arch, record, self.config, knobs)
                self.works.append(work)
                return work

            self.sized[(rule, key)] = size_to_fit(build, self.settings, self.footprints)
        return self.sized[(rule, key)]

    def images_within_wall(self, model: str, kind: str, record: dict) -> float:
        """The most images one `kind` job (score, generate) of `model` may handle for its requested
        runtime to stay within the maximum wall time: the time left after process start and
        loading, over the seconds one image costs (compute and I/O, from a sized job of 1,000)."""
        work = build_work(kind, "limit", model, architecture_of(self.models[model]), {**record, "n_images": 1000},
                          self.config)
        sized = size_work(work, self.settings, self.footprints)
        budget = self.settings.max_wall_s / self.settings.runtime_safety - self.settings.job_overhead_s - sized.load_s
        return budget / ((sized.compute_s + sized.io_s) / 1000)

    def weight_gb(self, model: str, dtype: str) -> float:
        """The model's pipeline weights in `dtype`, in GiB."""
        from .work import GIB, weight_bytes

        return weight_bytes(architecture_of(self.models[model]), dtype) / GIB

    def rows(self) -> list[dict]:
        return [s.row() for s in self.sized.values()]

    def save_new_footprints(self) -> None:
        """Keep what this run traced for the next (the run's cache; the shipped one is read-only)."""
        if set(self.footprints.entries) - self._known:
            self.footprints.save()

    def write_report(self, path: Path) -> None:
        """Every sized job, and the footprints they read, for `bench size`."""
        used = {repr(w) for work in self.works for w, _ in work.calls}
        write_json(path, {"rows": self.rows(),
                          "footprints": {k: v for k, v in self.footprints.entries.items() if k in used}})


# The sizing table's leading columns, in this order; the rest follow as first seen.
COLUMNS = ("rule", "job", "model", "gpu", "peak_gb", "tflops", "hours", "runtime_min", "mem_gb_requested",
           "host_mem_gb_requested", "knobs", "utilisation", "compute_h", "load_s", "io_s")


def write_csv(rows: list[dict], path: Path) -> None:
    # The memory breakdown's columns (whichever a row has), then what the plan asked for: an
    # order that does not depend on which job the dry run lists first.
    planned = ["planned_runtime_min", "planned_gpu_mem_mb", "planned_mem_mb"]
    extra = sorted({k for r in rows for k in r} - set(COLUMNS) - set(planned))
    columns = [*COLUMNS, *extra, *(k for k in planned if any(k in r for r in rows))]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buf.getvalue())


def report_path() -> Path | None:
    value = os.environ.get(REPORT_ENV)
    return Path(value) if value else None
