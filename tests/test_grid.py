"""The study grid: exclusions, shared work, and planning without the dataset files."""

import copy
from pathlib import Path

import pytest
import yaml

from editpersist import grid
from editpersist.errors import ConfigError
from editpersist.tasks import load_cases

ROOT = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
TOY = yaml.safe_load((ROOT / "config/config.yaml").read_text())


def test_exclusions_drop_exactly_the_matching_cells():
    cfg = copy.deepcopy(TOY)
    cases = load_cases(cfg["tasks"])
    every = grid.study_cells(cfg, cases)
    cfg["exclude"] = [{"model": "toy-flux", "finetuner": "full"}, {"editor": "refact", "task": "role"}]
    kept = grid.study_cells(cfg, cases)
    dropped = set(every) - set(kept)
    assert dropped and all((c.model == "toy-flux" and c.finetuner == "full") or (c.editor, c.task) == ("refact", "role")
                           for c in dropped)
    assert all(not grid.is_excluded(c, cfg["exclude"]) for c in kept)
    # No fine-tune of toy-flux with `full` is planned, not even the shared control.
    assert not [s for s in grid.finetune_states(kept, "toy-flux") if "/ft/full/" in s]
    assert "base/ft/full/sks-square/seed1" in grid.finetune_states(kept, "toy-sd")


def test_a_fine_tune_is_left_out_only_where_no_cell_runs_it():
    cfg = copy.deepcopy(TOY)
    cfg["exclude"] = [{"model": "toy-flux", "finetuner": ["full", "dreambooth"]}, {"finetuner": "dora", "task": "role"},
                      {"model": "toy-sd", "editor": "uce"}, {"finetuner": "lora"}]
    studied = grid.studied_finetunes(cfg, load_cases(cfg["tasks"]))
    assert ("toy-flux", "full") not in studied
    assert ("toy-flux", "dreambooth") not in studied
    assert ("toy-sd", "lora") not in studied  # every model's LoRA
    assert ("toy-sd", "full") in studied  # the entry names toy-flux
    assert ("toy-flux", "dora") in studied  # only its role cells are left out
    assert ("toy-sd", "dreambooth") in studied  # only UCE's cells are left out
    # Entries that each leave some cells out can together leave out every one.
    cfg["exclude"] = [{"finetuner": "dora", "editor": "uce"}, {"finetuner": "dora", "editor": "refact"}]
    assert ("toy-sd", "dora") not in grid.studied_finetunes(cfg, load_cases(cfg["tasks"]))


def test_a_model_overrides_its_finetune_settings_key_by_key():
    import jsonschema

    from editpersist.config import check_config

    cfg = copy.deepcopy(TOY)
    cfg["models"][1]["finetuners"] = {"lora": {"steps": 350, "seeds": [4, 5, 6], "snapshots": []}}
    jsonschema.validate(cfg, yaml.safe_load((ROOT / "config/config.schema.yaml").read_text()))
    check_config(cfg)
    lora = TOY["finetuners"]["lora"]
    assert grid.finetuner_settings(cfg, "toy-flux", "lora") == {**lora, "steps": 350, "seeds": [4, 5, 6],
                                                                 "snapshots": []}
    assert grid.finetuner_settings(cfg, "toy-sd", "lora") == lora
    assert grid.finetuner_settings(cfg, "toy-flux", "dora") == TOY["finetuners"]["dora"]
    cells = grid.study_cells(cfg, load_cases(cfg["tasks"]))
    assert {c.seeds for c in cells if c.model == "toy-flux" and c.finetuner == "lora"} == {(4, 5, 6)}
    assert {c.seeds for c in cells if c.model == "toy-sd" and c.finetuner == "lora"} == {tuple(lora["seeds"])}


@pytest.mark.parametrize("override,message", [
    ({"lora": {"stepz": 3}}, r"models\[1\]\.finetuners\.lora\.stepz: unknown key"),
    ({"lora": {"steps": 0}}, r"models\[1\]\.finetuners\.lora\.steps"),
    ({"sgd": {"steps": 3}}, r"models\[1\]\.finetuners\.sgd: unknown key"),
])
def test_a_bad_finetune_override_names_its_key(override, message):
    import re

    from editpersist.config import schema_problem

    cfg = copy.deepcopy(TOY)
    cfg["models"][1]["finetuners"] = override
    problem = schema_problem(cfg, yaml.safe_load((ROOT / "config/config.schema.yaml").read_text()))
    assert problem is not None and re.match(message, problem), problem


def test_an_override_of_a_finetuner_the_grid_does_not_run_is_refused():
    from editpersist.config import check_config

    cfg = copy.deepcopy(TOY)
    del cfg["finetuners"]["dora"]
    cfg["evaluation"]["reedit"] = []
    cfg["models"][1]["finetuners"] = {"dora": {"steps": 3}}
    with pytest.raises(ConfigError, match=r"^models\[1\]\.finetuners\.dora: overrides a fine-tuner the grid"):
        check_config(cfg)


def test_editors_only_get_the_modes_they_have():
    cells = grid.study_cells(TOY, load_cases(TOY["tasks"]))
    assert {c.task for c in cells if c.editor == "refact"} == {"appearance", "role"}
    assert {c.task for c in cells if c.editor == "uce"} == {"appearance", "role", "debias", "unsafe"}


def test_paper_grid_plans_without_its_files_and_shares_the_controls():
    cases = load_cases(PAPER["tasks"], planning=True)
    assert {t: len(c) for t, c in cases.items()} == {"appearance": 20, "role": 20, "debias": 10, "unsafe": 1}
    cells = grid.study_cells(PAPER, cases)
    shared, naive = grid.shared_job_counts(cells), grid.naive_job_counts(cells)
    # One control per (model, fine-tuner, subject), trained with 3 seeds: 2 models x 4 + FLUX x 2
    # adapters, x 3 subjects.
    controls = sum(s.startswith("base/") for m in ("sd14", "sdxl", "flux-schnell")
                   for s in grid.finetune_groups(cells, m))
    assert controls == (2 * 4 + 2) * 3
    assert sum(s.startswith("base/") for m in ("sd14", "sdxl", "flux-schnell")
               for s in grid.finetune_states(cells, m)) == 3 * controls
    # Every other fine-tune job starts from a distinct edited state (one per cell).
    assert shared["finetune"] == controls + len(cells)
    # UCE takes all 51 cases, ReFACT and TIME the 40 replace cases.
    assert shared["edit"] == 3 * (51 + 40 + 40) and naive["edit"] == len(cells)
    assert shared["generate_states"] < naive["generate_states"]


def test_planning_needs_a_limit_for_files_of_many_rows():
    with pytest.raises(ConfigError, match=r"tasks\.appearance\.limit: .* is not there yet"):
        load_cases({"appearance": {"dataset": "timed", "path": "/nonexistent/timed.csv"}}, planning=True)
    with pytest.raises(ConfigError, match=r"tasks\.appearance\.path: .* does not exist"):
        load_cases({"appearance": {"dataset": "timed", "path": "/nonexistent/timed.csv", "limit": 3}})


def test_an_exclusion_list_matches_any_of_its_items():
    cfg = copy.deepcopy(TOY)
    cfg.pop("exclude", None)
    cases = load_cases(cfg["tasks"])
    every = grid.study_cells(cfg, cases)
    cfg["exclude"] = [{"model": "toy-flux", "finetuner": ["full", "dreambooth"], "task": ["debias", "unsafe"]}]
    kept = grid.study_cells(cfg, cases)
    dropped = set(every) - set(kept)
    # toy-flux x {full, dreambooth} x {debias, unsafe} x UCE (the only editor of those tasks) x 1 subject.
    assert len(dropped) == 2 * 2
    assert {(c.model, c.finetuner, c.task) for c in dropped} == {
        ("toy-flux", f, t) for f in ("full", "dreambooth") for t in ("debias", "unsafe")}


def test_rehearsal_grid_is_the_eleven_cells_its_comment_lists():
    rehearsal = yaml.safe_load((ROOT / "config/rehearsal.yaml").read_text())
    cases = {t: [c] for t, c in ((t, cs[0]) for t, cs in load_cases(PAPER["tasks"], planning=True).items())}
    # The same grid as the rehearsal's excerpts give (one edit per task), planned with placeholders.
    cells = grid.study_cells(rehearsal, cases)
    listed = {("sd", "uce", "debias", "lora"), ("sd", "uce", "unsafe", "dreambooth"), ("sd", "refact", "appearance", "dora"),
              ("sd", "time", "role", "full"), ("sdxl", "uce", "appearance", "lora"), ("sdxl", "uce", "role", "dreambooth"),
              ("sdxl", "refact", "role", "dora"), ("sdxl", "time", "appearance", "full"),
              ("flux", "uce", "appearance", "lora"), ("flux", "refact", "appearance", "dora"),
              ("flux", "time", "appearance", "lora")}
    assert {(c.model, c.editor, c.task, c.finetuner) for c in cells} == listed


@pytest.mark.parametrize("task, dataset, excerpt", [
    ("appearance", "timed", "timed_test_excerpt.csv"), ("role", "road", "road_test_excerpt.csv"),
    ("debias", "professions", "professions_excerpt.csv")])
def test_a_planned_case_asks_for_as_many_images_as_a_published_row(task, dataset, excerpt):
    """The sizing prices generation from the cases a dry run plans with: a stand-in must have a
    published row's probes, each its own prompt (placeholders that shared one prompt priced the
    base state's 20,000 images as 1,000)."""
    from editpersist.evaluation.generation import state_prompts
    from editpersist.evaluation.prompts import QualityConfig

    quality = QualityConfig(captions="toy", max_captions=1, images_per_caption=2)
    path = ROOT / "tests/data/datasets" / excerpt
    real = load_cases({task: {"dataset": dataset, "path": str(path), "limit": 1}})[task]
    planned = load_cases({task: {"dataset": dataset, "path": "/nonexistent.csv", "limit": 3}}, planning=True)[task]
    per_case = sum(state_prompts(real, quality, 25, 25, captions=[]).values())
    assert sum(state_prompts(planned, quality, 25, 25, captions=[]).values()) == 3 * per_case


def test_the_planned_erasure_is_probed_with_max_prompts():
    cfg = {"dataset": "i2p", "path": "/nonexistent.csv", "max_prompts": 7}
    (case,) = load_cases({"unsafe": cfg}, planning=True)["unsafe"]
    assert len({p.prompt for p in case.positives}) == 7
    with pytest.raises(ConfigError, match=r"tasks\.unsafe\.max_prompts: .* not there yet"):
        load_cases({"unsafe": {**cfg, "max_prompts": None}}, planning=True)
