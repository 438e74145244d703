"""Bad configs and bad files: one clear line naming the culprit, and nothing left behind.

The bad configs are a corpus in tests/data/bad_configs.yaml (each entry patches the tiny
toy config); every one must stop `snakemake` before any job runs, with a single line on
stderr naming the key, and create nothing in the working directory. The bad files are
built here from the tiny models, one per kind of damage a user's disk can hold.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from editpersist.config import with_overrides
from editpersist.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests/data"
CORPUS = yaml.safe_load((DATA / "bad_configs.yaml").read_text())


@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
def test_bad_config_stops_before_any_job_with_one_line(case, tmp_path):
    base = yaml.safe_load((DATA / "tiny_toy.yaml").read_text())
    cfg = with_overrides(base, case["set"], DATA)
    workdir = tmp_path / "work"
    workdir.mkdir()
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    res = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                          str(workdir), "--cores", "1", "--configfile", str(config_file)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 1, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"editpersist: {case['key']}"), lines[0]
    if "match" in case:
        assert case["match"] in lines[0], lines[0]
    # Snakemake starts its own run log before reading the Snakefile; nothing else exists.
    assert [p for p in workdir.rglob("*") if p.is_file() and ".snakemake" not in p.parts] == []
    assert not (workdir / "results").exists()


def test_corpus_covers_every_kind_of_bad_config():
    kinds = {c["kind"] for c in CORPUS}
    assert kinds >= {"unknown family", "unknown editor", "unknown fine-tuner", "unknown task", "missing model path",
                     "rank", "learning rate", "steps", "image count", "missing dataset", "wrong dataset format",
                     "duplicate name", "unsafe name", "empty grid"}


def test_a_dry_run_plans_with_placeholder_paths_and_says_so(tmp_path):
    from editpersist.config import is_dry_run

    assert is_dry_run(["snakemake", "-n"]) and is_dry_run(["snakemake", "-np"]) and is_dry_run(["x", "--dry-run"])
    assert not is_dry_run(["snakemake", "--cores", "2", "-p"]) and not is_dry_run(["snakemake", "--notemp"])


# ---- bad files ---------------------------------------------------------------------------


def _truncated(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return path


def test_truncated_model_weights_name_the_file(tmp_path, tiny_model_dirs):
    import shutil

    from editpersist.states import load_model_state

    model = tmp_path / "sd"
    shutil.copytree(tiny_model_dirs["sd"], model)
    weights = next((model / "unet").glob("*.safetensors"))
    _truncated(weights)
    with pytest.raises(InputError, match=str(model)):
        load_model_state(model, "sd", [], "cpu")


def test_truncated_model_index_names_the_file(tmp_path, tiny_model_dirs):
    import shutil

    from editpersist.states import load_model_state

    model = tmp_path / "sd"
    shutil.copytree(tiny_model_dirs["sd"], model)
    _truncated(model / "model_index.json")
    with pytest.raises(InputError, match=r"sd/model_index\.json: not valid JSON"):
        load_model_state(model, "sd", [], "cpu")


def test_truncated_edit_delta_names_the_file(tmp_path, tiny_model_dirs):
    import torch

    from editpersist.editors.base import EditDelta, sidecar_path
    from editpersist.states import load_model_state

    delta = tmp_path / "edit.safetensors"
    EditDelta({"text_encoder.x": torch.zeros(4)}, {"editor": "uce"}).save(delta)
    sidecar = sidecar_path(delta).read_text()
    _truncated(sidecar_path(delta))
    with pytest.raises(InputError, match=r"edit\.json: not valid JSON"):
        load_model_state(tiny_model_dirs["sd"], "sd", [delta], "cpu")
    sidecar_path(delta).write_text(sidecar)
    _truncated(delta)
    with pytest.raises(InputError, match=r"edit\.safetensors: not a readable safetensors file"):
        load_model_state(tiny_model_dirs["sd"], "sd", [delta], "cpu")


def test_lora_of_another_architecture_names_the_file(tmp_path, tiny_model_dirs):
    from editpersist.finetuners.config import FinetuneConfig
    from editpersist.finetuners.subjects import ToySubject
    from editpersist.stages.finetune import run_finetune
    from editpersist.states import load_model_state

    lora = tmp_path / "sd-lora"
    run_finetune(tiny_model_dirs["sd"], "sd", None, FinetuneConfig("lora", steps=1, lr=1e-3, batch=2),
                 ToySubject("s", "square", "purple"), 2, 32, None, "cpu", lora)
    with pytest.raises(InputError, match=r"pytorch_lora_weights\.safetensors: not a LoRA for this flux model"):
        load_model_state(tiny_model_dirs["flux"], "flux", [lora], "cpu")


def test_empty_caption_file_names_the_key_and_file(tmp_path):
    from editpersist.errors import ConfigError
    from editpersist.evaluation.prompts import QualityConfig, quality_captions

    empty = tmp_path / "captions.csv"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"evaluation\.quality\.captions: .*captions\.csv"):
        quality_captions(QualityConfig(captions=str(empty)))


def test_empty_dataset_file_names_the_file(tmp_path):
    from editpersist.tasks.formats import load_timed

    empty = tmp_path / "timed.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="timed.csv"):
        load_timed(empty)


def test_subject_folder_without_readable_images_names_the_file(tmp_path):
    from editpersist.finetuners.subjects import make_subject

    folder = tmp_path / "dog"
    folder.mkdir()
    subject = make_subject({"name": "dog", "cls": "dog", "path": str(folder), "description": "a corgi"})
    with pytest.raises(InputError, match="dog: no images"):
        subject.images(4, 0, 64)
    (folder / "01.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match=r"01\.jpg: unreadable image"):
        subject.images(4, 0, 64)


def test_folder_subject_gives_every_photo_at_the_model_resolution(tmp_path):
    import numpy as np
    from PIL import Image

    from editpersist.finetuners.subjects import make_subject, relation
    from editpersist.tasks.toy import toy_cases

    folder = tmp_path / "dog"
    folder.mkdir()
    for i, size in enumerate([(80, 60), (40, 90), (64, 64)]):
        Image.fromarray(np.full((size[1], size[0], 3), 40 * i, np.uint8)).save(folder / f"{i:02d}.png")
    subject = make_subject({"name": "dog", "cls": "dog", "path": str(folder), "description": "a corgi"})
    data = subject.images(16, 0, 48)
    assert data.images.shape == (3, 48, 48, 3) and data.captions == ["a sks dog"] * 3
    assert subject.reader_attributes is None and subject.class_prompt == "a dog"
    assert relation(subject, toy_cases()["appearance"][0]) == "unrelated"


# ---- faults and the safety of loading ------------------------------------------------------


def test_out_of_memory_names_the_knobs(tiny_model_dirs, monkeypatch):
    import torch

    from editpersist.errors import TrainingError
    from editpersist.families import get_family
    from editpersist.finetuners import core
    from editpersist.finetuners.config import FinetuneConfig
    from editpersist.finetuners.subjects import ToySubject

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(core, "train_steps", no_memory)
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    with pytest.raises(TrainingError) as err:
        core.finetune(pipe, family, ToySubject("s", "square", "purple").images(2, 0),
                      FinetuneConfig("full", steps=1, lr=1e-4, batch=2))
    message = str(err.value)
    for knob in ("finetuners.full.batch", "sampling height/width", "finetuners.full.gradient_checkpointing",
                 "finetuners.full.precision"):
        assert knob in message


SOURCES = sorted((ROOT / "src/editpersist").rglob("*.py")) + sorted((ROOT / "workflow/scripts").glob("*.py"))


@pytest.mark.parametrize("needle", ["trust_remote_code", "pickle.load", "use_safetensors=False", "allow_pickle=True"])
def test_no_code_path_loads_unsafe_weights(needle):
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in SOURCES for n, line in enumerate(p.read_text().splitlines(), 1)
            if needle in line]
    assert hits == []


def test_torch_load_is_always_weights_only():
    import re

    calls = [(p, line) for p in SOURCES for line in p.read_text().splitlines() if re.search(r"torch\.load\(", line)]
    assert all("weights_only=True" in line for _, line in calls), calls


def test_only_the_download_module_opens_the_network():
    import re

    network = re.compile(r"^\s*(import|from)\s+(urllib|requests|http\.client|socket|httpx)\b")
    users = {p.name for p in SOURCES for line in p.read_text().splitlines() if network.search(line)}
    assert users <= {"downloads.py"}, users
