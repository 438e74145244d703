import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from editpersist.config import check_config, validate_config
from editpersist.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "config/config.schema.yaml").read_text())
DEFAULT = yaml.safe_load((ROOT / "config/config.yaml").read_text())


def test_default_config_is_valid():
    jsonschema.validate(DEFAULT, SCHEMA)
    check_config(DEFAULT)


def _with(path, value):
    cfg = copy.deepcopy(DEFAULT)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return cfg


@pytest.mark.parametrize("path,value", [
    (("models", 0, "family"), "sd3"),
    (("models", 0, "name"), "toy_sd/x"),
    (("toy", "sd", "steps"), 0),
    (("toy", "sd", "lr"), 0.0),
    (("toy", "n_eval_per_pair"), 0),
    (("toy", "vae", "typo"), 1),
    (("device",), "tpu"),
    # A full or DreamBooth fine-tune stores absolute denoiser weights: as a "transfer" it would
    # overwrite the edit, so only adapters may be transferred.
    (("evaluation", "transfer"), ["full"]),
    (("evaluation", "transfer"), ["dreambooth"]),
    (("finetuners", "lora", "seeds"), []),
    (("finetuners", "lora", "seeds"), [0, 0]),
    (("finetuners", "lora", "seed"), 0),
    (("evaluation", "min_effect"), {"efficacy": -0.1}),
    (("evaluation", "min_ft_fidelity"), 1.5),
])
def test_schema_rejects_bad_values(path, value):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_with(path, value), SCHEMA)


def test_duplicate_model_names_are_rejected():
    cfg = copy.deepcopy(DEFAULT)
    cfg["models"].append(dict(cfg["models"][0]))
    with pytest.raises(ConfigError, match="models: duplicate name 'toy-sd'"):
        check_config(cfg)


def test_missing_real_model_path_names_the_key(tmp_path):
    cfg = _with(("models", 1), {"name": "sd14", "family": "sd", "path": str(tmp_path / "missing")})
    cfg.pop("exclude")  # it names the toy FLUX this replaces
    cfg["evaluation"]["scorer"] = "judge"  # a real model has no toy reader
    cfg["editors"]["uce"]["debias"]["meter"] = "judge"
    with pytest.raises(ConfigError, match=r"models\[1\]\.path: .*does not exist"):
        check_config(cfg)
    cfg["allow_download"] = True
    check_config(cfg)  # may then be a hub id


def test_conda_env_is_the_lock_and_installs_the_package():
    """Cluster users' conda env (--sdm conda) and pip users' install must not drift apart: the
    env pins exactly the lock, which holds every dependency of pyproject.toml at its version;
    Snakemake's post-deploy script beside it installs the package (without touching a pin)
    from the folder the Snakefile exports, and every rule runs in that env."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    env = (root / "envs/editpersist.yaml").read_text()
    conda_pins = re.findall(r"^\s+- ([A-Za-z0-9_.-]+==[^\s]+)$", env, flags=re.M)
    lock = (root / "requirements.lock").read_text().split()
    assert sorted(conda_pins) == sorted(lock) and len(set(conda_pins)) == len(conda_pins)
    assert all("==" in d for d in deps)
    assert {d.lower().replace("_", "-") for d in deps} <= {p.lower().replace("_", "-") for p in lock}
    deploy = (root / "envs/editpersist.post-deploy.sh").read_text()
    assert re.search(r'^python -m pip install --no-deps -e "\$root"$', deploy, flags=re.M)
    assert 'root="${EDITPERSIST_ROOT:?' in deploy
    assert 'os.environ.setdefault("EDITPERSIST_ROOT", workflow.basedir)' in (root / "Snakefile").read_text()
    # Every rule that runs code (a script) runs it in that env.
    blocks = [b for f in (root / "workflow/rules").glob("*.smk") for b in re.split(r"^rule ", f.read_text(), flags=re.M)]
    jobs = [b for b in blocks if "\n    script:" in b]
    envs = [re.search(r'^    conda:\n        "(.+)"$', b, re.M) for b in jobs]
    assert len(jobs) > 20 and {e and e.group(1) for e in envs} == {"../../envs/editpersist.yaml"}


def test_reader_scorer_with_a_real_model_is_rejected(tmp_path):
    (tmp_path / "sd14").mkdir()
    cfg = _with(("models", 1), {"name": "sd14", "family": "sd", "path": str(tmp_path / "sd14")})
    cfg.pop("exclude")  # it names the toy FLUX this replaces
    with pytest.raises(ConfigError, match=r"evaluation\.scorer: 'reader' exists only in the toy world"):
        check_config(cfg)


def test_reedit_of_a_fine_tuner_outside_the_grid_is_rejected():
    cfg = _with(("evaluation", "reedit"), ["lora", "nonexistent"])
    with pytest.raises(ConfigError, match=r"evaluation\.reedit: fine-tuner 'nonexistent'"):
        check_config(cfg)


def test_toy_block_is_needed_only_by_a_config_that_uses_the_toy_world():
    paper = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    assert "toy" not in paper
    validate_config(paper, planning=True)  # its Hub models resolved to snapshot folders first
    cfg = copy.deepcopy(DEFAULT)
    del cfg["toy"]
    with pytest.raises(ConfigError, match=r"^toy: required, because models\[0\]\.path is built by the toy world"):
        check_config(cfg)


def test_a_rehearsal_model_must_sit_at_its_family_path():
    rehearsal = yaml.safe_load((ROOT / "config/rehearsal.yaml").read_text())
    jsonschema.validate(rehearsal, SCHEMA)
    cfg = copy.deepcopy(rehearsal)
    cfg["models"][1]["path"] = "resources/rehearsal/models/sd"  # an SDXL model at the SD folder
    with pytest.raises(ConfigError, match=r"models\[1\]\.path: a rehearsal model of family 'sdxl' is built at "
                                          r"'resources/rehearsal/models/sdxl'"):
        check_config(cfg, planning=True)


def test_a_config_that_extends_another_is_that_config_with_its_changes(tmp_path, monkeypatch):
    from editpersist.config import output_roots, resolve_extends

    monkeypatch.chdir(ROOT)
    variant = {"extends": "config/config.yaml",
               "changes": {"results": "results/other", "tasks.debias": "<delete>", "finetuners.lora.steps": 7}}
    resolve_extends(variant)
    assert "debias" not in variant["tasks"] and variant["finetuners"]["lora"]["steps"] == 7
    assert {k: v for k, v in variant.items() if k not in ("results", "tasks", "finetuners")} == {
        k: v for k, v in DEFAULT.items() if k not in ("tasks", "finetuners")}
    assert output_roots(variant) == ("results/other", "results/other/logs", "results/other/benchmarks")
    assert output_roots(DEFAULT) == ("results", "logs", "benchmarks")  # the default study's places
    for bad, key in (({"extends": "config/none.yaml"}, "extends: config/none.yaml"),
                     ({"extends": "config/config.yaml", "changes": {"tasks.style.dataset": "toy"}},
                      "changes.tasks.style.dataset"),
                     ({"extends": "config/config.yaml", "seed": 1}, "seed: a config with `extends`")):
        with pytest.raises(ConfigError, match=f"^{key}"):
            resolve_extends(bad)


def test_uce_persist_needs_uce_and_is_the_only_way_in():
    from editpersist.editors import check_editor_blocks

    cfg = copy.deepcopy(DEFAULT)
    cfg["editors"]["uce-persist"] = {"persist": {"meter": "reader"}}
    check_editor_blocks(cfg)
    del cfg["editors"]["uce"]
    with pytest.raises(ConfigError, match="^editors.uce-persist: builds on editors.uce"):
        check_editor_blocks(cfg)
    # One way in: the persistence-aware mode is the uce-persist editor, not a key of uce's block.
    cfg = copy.deepcopy(DEFAULT)
    cfg["editors"]["uce"]["persist"] = {"meter": "reader"}
    from editpersist.config import schema_problem

    assert schema_problem(cfg, SCHEMA).startswith("editors.uce.persist: unknown key")


@pytest.mark.parametrize("editor,block,message", [
    ("uce-persist", {"persist": {"margins": [2.0, 1.0]}}, r"^editors\.uce-persist: persist\.margins \(2\.0, 1\.0\): "
                                                           r"non-negative and increasing"),
    ("refact", {"loss": "l1"}, None),  # the schema's enum stops it first
])
def test_an_editor_block_the_schema_admits_but_its_editor_refuses_stops_at_config_check(editor, block, message):
    """The editor's own parser runs at config check: a block it refuses is one line naming the
    editor, before any job, not a traceback inside the edit job."""
    cfg = copy.deepcopy(DEFAULT)
    cfg["editors"][editor] = {**cfg["editors"].get(editor, {}), **block}
    if message is None:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(cfg, SCHEMA)
        return
    jsonschema.validate(cfg, SCHEMA)
    check_config(cfg)
    from editpersist.editors import check_editor_blocks

    with pytest.raises(ConfigError, match=message):
        check_editor_blocks(cfg)
