"""States out of the project: `editpersist export` writes a diffusers pipeline folder that plain
diffusers loads and that draws the images the project's own loader draws, on the same seeds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import TINY_CONFIG
from editpersist.cli import main
from editpersist.sampling import SamplingConfig, generate
from editpersist.states import BASE, LORA_FILE, State, load_model_state
from editpersist.tasks.toy import toy_cases

CASE = toy_cases()["appearance"][0]
EDITED = State.edited("uce", "appearance", CASE.name)
SAMPLING = SamplingConfig(steps=2, guidance=3.0, height=32, width=32, batch=2)
PROMPTS = [CASE.source.prompt, "a red square"]


@pytest.fixture(scope="module")
def study(tiny_model_dirs, tmp_path_factory) -> Path:
    """A tiny SD model's states as the workflow lays them out: an edit, and a LoRA fine-tune of
    the base and of the edited model (one seed each)."""
    from editpersist.finetuners.config import FinetuneConfig
    from editpersist.finetuners.subjects import ToySubject
    from editpersist.stages.edit import run_edit
    from editpersist.stages.finetune import run_finetune_seeds

    states = tmp_path_factory.mktemp("results") / "states/tiny-sd"
    model = tiny_model_dirs["sd"]
    delta = EDITED.path(states)
    run_edit(model_dir=model, family_name="sd", editor_name="uce",
             editor_cfg={"lam": 0.5, "s_e": 1.0, "s_p": 1.0, "token_mode": "aligned", "guide": ""}, case=CASE,
             judge_dir=None, sampling=SamplingConfig(steps=2), seed=0, device="cpu", out=delta)
    lora = FinetuneConfig("lora", steps=2, lr=5e-2, batch=2)
    subject = ToySubject("sks-square", "square", "purple")
    for start, out in ((None, BASE), (delta, EDITED)):
        run_finetune_seeds(model, "sd", start, lora, subject, 4, 32, None, "cpu",
                           out.finetuned("lora", "sks-square").path(states), seeds=[0])
    return states


def images_of(pipe) -> np.ndarray:
    from editpersist.families import get_family

    return generate(pipe, get_family("sd"), PROMPTS, 2, SAMPLING, base_seed=0)[0]


def plain_pipeline(folder: Path):
    """What a colleague without this package does with the folder."""
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(folder, local_files_only=True, use_safetensors=True)


@pytest.mark.parametrize("state", [EDITED, EDITED.finetuned("lora", "sks-square", 0)], ids=lambda s: s.kind)
def test_an_exported_state_loads_in_plain_diffusers_and_draws_the_same_images(study, tiny_model_dirs, tmp_path, state):
    from editpersist.stages.export import EXPORT_FILE, export_state

    out = tmp_path / "export"
    export_state(tiny_model_dirs["sd"], "sd", study, state.name, out)
    _, ours = load_model_state(tiny_model_dirs["sd"], "sd", [study / layer for layer in state.layers()], "cpu")
    base = plain_pipeline(tiny_model_dirs["sd"])
    theirs = plain_pipeline(out)
    assert type(theirs).__name__ == "StableDiffusionPipeline"
    np.testing.assert_array_equal(images_of(theirs), images_of(ours))
    # The export is the state, not the base: its weights moved where the state's layers did.
    assert not np.array_equal(images_of(theirs), images_of(base))
    assert yaml.safe_load((out / EXPORT_FILE).read_text())["state"] == state.name
    assert (out / "lora" / LORA_FILE).is_file() == (state.kind == "edited_ft")


def test_an_adapter_state_also_exports_its_lora_for_load_lora_weights(study, tiny_model_dirs, tmp_path):
    """The LoRA file on the plain base, fused, is the project's base_ft state."""
    state = BASE.finetuned("lora", "sks-square", 0)
    main(["export", state.name, str(tmp_path / "export"), "--model", "tiny-sd", "--configfile",
          str(config_file(tmp_path, tiny_model_dirs)), "--results", str(study.parent.parent)])
    assert (tmp_path / "export/lora" / LORA_FILE).is_file()
    plain = plain_pipeline(tiny_model_dirs["sd"])
    plain.load_lora_weights(str(tmp_path / "export/lora"), weight_name=LORA_FILE)
    plain.fuse_lora()
    _, ours = load_model_state(tiny_model_dirs["sd"], "sd", [study / layer for layer in state.layers()], "cpu")
    np.testing.assert_array_equal(images_of(plain), images_of(ours))
    meta = yaml.safe_load((tmp_path / "export" / "editpersist_export.json").read_text())
    assert meta["lora"] == {"file": f"lora/{LORA_FILE}", "applies_to": "base"}


def config_file(tmp_path: Path, tiny_model_dirs) -> Path:
    """The tiny study's config with the tiny SD pipeline as its model."""
    from editpersist.config import with_overrides

    cfg = with_overrides(yaml.safe_load(TINY_CONFIG.read_text()), {
        "models": [{"name": "tiny-sd", "family": "sd", "path": str(tiny_model_dirs["sd"])}], "evaluation.scorer": "judge"})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_export_refuses_a_state_the_study_has_not_made_and_writes_nothing(study, tiny_model_dirs, tmp_path):
    missing = EDITED.finetuned("dora", "sks-square", 0).name
    with pytest.raises(SystemExit, match=r"editpersist: .*ft/dora/sks-square/seed0: layer of state .* not found"):
        main(["export", missing, str(tmp_path / "export"), "--model", "tiny-sd", "--configfile",
              str(config_file(tmp_path, tiny_model_dirs)), "--results", str(study.parent.parent)])
    assert not (tmp_path / "export").exists()


def test_the_console_script_lists_every_subcommand_and_each_has_help():
    # pip puts the console script beside the interpreter it installed the package for.
    exe = Path(sys.executable).parent / "editpersist"
    assert exe.is_file(), "the editpersist console script is not installed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    top = subprocess.run([str(exe), "--help"], capture_output=True, text=True, env=env)
    assert top.returncode == 0
    for command in ("plan", "export", "compare", "bench"):
        assert f"\n    {command} " in top.stdout, top.stdout
        sub = subprocess.run([sys.executable, "-m", "editpersist.cli", command, "--help"], capture_output=True,
                             text=True, env=env)
        assert sub.returncode == 0 and sub.stdout.startswith("usage:"), sub.stderr


def test_plan_prints_the_dry_run_s_jobs_and_the_grid_s_cost(capsys):
    """`editpersist plan`: the dry run's jobs per rule agree with the grid's own count of its
    shared jobs (editpersist.grid), and every model of the config is priced."""
    from editpersist import grid
    from editpersist.tasks import load_cases

    main(["plan", "--configfile", str(TINY_CONFIG)])
    out = capsys.readouterr().out
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    shared = grid.shared_job_counts(grid.study_cells(cfg, load_cases(cfg["tasks"], planning=True)))
    jobs = {line.split("|")[1].strip(): int(line.split("|")[2].replace(",", "")) for line in out.splitlines()
            if line.startswith("| ") and line.count("|") == 3 and line.split("|")[2].strip().replace(",", "").isdigit()}
    assert jobs["edit"] == shared["edit"] and jobs["finetune"] == shared["finetune"]
    assert {m["name"] for m in cfg["models"]} <= {line.split("|")[1].strip() for line in out.splitlines()
                                                   if line.count("|") == 4}
