"""Checks of a workflow config before any job runs: the JSON schema, then what a schema
cannot say (duplicates, paths, cross-references). Every problem is one line that starts
with the config key. Kept free of torch and diffusers imports, so a bad config fails in
about the time Snakemake takes to start.
"""

from __future__ import annotations

import copy
import re
import sys
from collections import Counter
from pathlib import Path

import yaml

from .errors import ConfigError, EditPersistError
from .hub import resolve_hub_models

TOY_PREFIX = "resources/toy/"
REHEARSAL_PREFIX = "resources/rehearsal/"
# Paths under these are made by the workflow's own rules (the toy world, the rehearsal's
# random models, judge, photos, reference images and corpus): they need not exist before a run.
BUILT_PREFIXES = (TOY_PREFIX, REHEARSAL_PREFIX)


def is_built(path: str) -> bool:
    return str(path).startswith(BUILT_PREFIXES)
SCHEMA = Path(__file__).resolve().parents[2] / "config" / "config.schema.yaml"


def planning_note(message: str) -> None:
    """One line on stderr: what a dry run planned around (Snakemake's logging is not set up
    while the Snakefile is parsed, so this does not go through `logging`)."""
    print(f"editpersist: planning only: {message}", file=sys.stderr)


def key_path(parts) -> str:
    """('models', 0, 'path') -> 'models[0].path'."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _allowed_keys(schema: dict) -> list[str]:
    return sorted(set(schema.get("properties", {})) | set(schema.get("patternProperties", {})))


def schema_problem(config: dict, schema: dict) -> str | None:
    """The most relevant schema violation as one line, or None."""
    # Imported here: jsonschema costs every job ~0.5 s at import, and only config checks need it.
    import jsonschema
    from jsonschema.exceptions import best_match

    error = best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is None:
        return None
    where = list(error.absolute_path)
    if error.validator == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        extra = [k for k in error.instance if k not in known and not any(re.match(p, k) for p in patterns)]
        return f"{key_path(where + extra[:1])}: unknown key; expected one of {_allowed_keys(error.schema)}"
    if error.validator == "oneOf":
        return f"{key_path(where)}: matches none of the allowed forms ({error.message})"
    return f"{key_path(where)}: {error.message}"


def _duplicates(names: list[str]) -> list[str]:
    return [n for n, k in Counter(names).items() if k > 1]


def missing_path(key: str, path: str, planning: bool) -> None:
    """A path the workflow cannot make must exist; a dry run only plans, so it warns."""
    if Path(path).exists():
        return
    if planning:
        planning_note(f"{key}: {path} does not exist (a real run refuses it)")
        return
    raise ConfigError(f"{key}: {path!r} does not exist")


def check_config(config: dict, planning: bool = False) -> None:
    """Raise ConfigError with the offending key for the first problem found.

    `planning` (a dry run) accepts model and data paths that do not exist yet."""
    models = config.get("models", [])
    for key, names in (("models", [m["name"] for m in models]),
                       ("finetune_data.subjects", [s["name"] for s in config["finetune_data"]["subjects"]])):
        dupes = _duplicates(names)
        if dupes:
            raise ConfigError(f"{key}: duplicate name {dupes[0]!r}")
    download = config.get("allow_download", False)
    for i, m in enumerate(models):
        # Built models are made by the workflow; with downloads allowed a path may be a hub id.
        if not is_built(m["path"]) and not download:
            missing_path(f"models[{i}].path", m["path"], planning)
        check_built_model(f"models[{i}]", m)
        for ft in m.get("finetuners", {}):
            if ft not in config["finetuners"]:
                raise ConfigError(f"models[{i}].finetuners.{ft}: overrides a fine-tuner the grid does not run "
                                  f"(finetuners has {list(config['finetuners'])})")
    for i, s in enumerate(config["finetune_data"]["subjects"]):
        if "path" in s and not is_built(s["path"]):
            missing_path(f"finetune_data.subjects[{i}].path", s["path"], planning)
    judge = config["judge"]["model"]
    if "/" in judge and not is_built(judge):  # a directory, not an open_clip architecture name
        missing_path("judge.model", judge, planning)
    check_toy_block(config)
    check_evaluation(config, planning)
    check_exclusions(config)


def check_built_model(key: str, model: dict) -> None:
    """A rehearsal model is built from its path: resources/rehearsal/models/<family>."""
    path = model["path"]
    if path.startswith(REHEARSAL_PREFIX):
        expected = f"{REHEARSAL_PREFIX}models/{model['family']}"
        if path.rstrip("/") != expected:
            raise ConfigError(f"{key}.path: a rehearsal model of family {model['family']!r} is built at "
                              f"{expected!r}, not {path!r}")


def check_toy_block(config: dict) -> None:
    """The `toy:` block configures the toy world's build; only a config that uses it needs it."""
    uses = [f"models[{i}].path" for i, m in enumerate(config["models"]) if m["path"].startswith(TOY_PREFIX)]
    uses += ["judge.model"] if config["judge"]["model"].startswith(TOY_PREFIX) else []
    if uses and "toy" not in config:
        raise ConfigError(f"toy: required, because {uses[0]} is built by the toy world")


def real_models(config: dict) -> list[str]:
    """Names of the models outside the toy world (no attribute reader knows their ground truth)."""
    return [m["name"] for m in config.get("models", []) if not m["path"].startswith(TOY_PREFIX)]


def check_evaluation(config: dict, planning: bool = False) -> None:
    ev = config.get("evaluation", {})
    real = real_models(config)
    if ev.get("scorer", "reader") == "reader" and real:
        raise ConfigError(f"evaluation.scorer: 'reader' exists only in the toy world, but model {real[0]!r} is "
                          "not a toy model; use 'judge'")
    for key in ("reedit", "transfer"):
        missing = [f for f in ev.get(key, []) if f not in config.get("finetuners", {})]
        if missing:
            raise ConfigError(f"evaluation.{key}: fine-tuner {missing[0]!r} is not in finetuners")
    quality = ev.get("quality", {})
    for key in ("captions", "reference"):
        if quality.get(key, "toy") != "toy" and not is_built(quality[key]):
            missing_path(f"evaluation.quality.{key}", quality[key], planning)
    inception = quality.get("inception")
    if inception == "download" and not config.get("allow_download", False):
        raise ConfigError("evaluation.quality.inception: 'download' fetches the Inception weights, but "
                          "allow_download is false; set it to true or give the weights file's path")
    if inception not in (None, "download"):
        missing_path("evaluation.quality.inception", inception, planning)


def check_exclusions(config: dict) -> None:
    """An exclusion that names nothing in the grid is a typo, not a no-op."""
    known = {"model": [m["name"] for m in config["models"]], "editor": list(config["editors"]),
             "task": list(config["tasks"]), "finetuner": list(config["finetuners"]),
             "subject": [s["name"] for s in config["finetune_data"]["subjects"]]}
    for i, rule in enumerate(config.get("exclude", [])):
        for key, value in rule.items():
            for v in value if isinstance(value, list) else [value]:
                if v not in known[key]:
                    raise ConfigError(f"exclude[{i}].{key}: {v!r} is not in the grid; expected one of {known[key]}")


# Snakemake flags that only plan (nothing runs): dry runs and the graph drawings.
PLANNING_FLAGS = ("-n", "--dry-run", "--dryrun", "--rulegraph", "--dag", "--filegraph", "--d3dag")


def is_dry_run(argv: list[str]) -> bool:
    """Whether the Snakemake command line only plans. Snakemake decides that only after
    parsing the Snakefile (`workflow.dryrun` is False while the config is checked), so the
    checks read the flags: PLANNING_FLAGS, or -n bundled with other value-less short flags
    (-np, -pn)."""
    return any(a in PLANNING_FLAGS or re.fullmatch(r"-[pqrkF]*n[pqrkF]*", a) for a in argv)


def validate_config(config: dict, planning: bool = False, schema_path: Path = SCHEMA) -> None:
    problem = schema_problem(config, yaml.safe_load(schema_path.read_text()))
    if problem:
        raise ConfigError(problem)
    resolve_hub_models(config)  # a Hub model's path is its snapshot folder from here on
    check_config(config, planning)


def with_overrides(config: dict, changes: dict, data_dir: Path | None = None) -> dict:
    """A copy of `config` with `changes` applied: dotted keys ("finetuners.lora.rank",
    "models.0.path"; index == length appends) -> value, "<delete>" removes the key, and a
    string "data:<path>" at any depth becomes that path under `data_dir` (the bad-config
    corpus in tests/data uses these)."""
    def resolve(value):
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, str) and value.startswith("data:") and data_dir is not None:
            return str(Path(data_dir) / value[len("data:"):])
        return value

    cfg = copy.deepcopy(config)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = cfg
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        last = int(last) if isinstance(node, list) else last
        if value == "<delete>":
            del node[last]
        elif isinstance(node, list) and last == len(node):
            node.append(resolve(value))
        else:
            node[last] = resolve(value)
    return cfg


def resolve_extends(config: dict) -> None:
    """A config of the form {extends: <config file>, changes: {dotted key: value}} becomes, in
    place, that file with the changes applied (`with_overrides`: "<delete>" removes a key). A
    variant of a study (config/stress.yaml) so states only what it changes, and shares the rest,
    the toy world's build settings above all: a copy of them that drifted would rebuild the world
    under the other study's feet."""
    extra = sorted(set(config) - {"extends", "changes"})
    if extra:
        raise ConfigError(f"{extra[0]}: a config with `extends` holds only `extends` and `changes`")
    path = Path(config["extends"])
    if not path.is_file():
        raise ConfigError(f"extends: {path}: no such config file (paths are relative to the working directory)")
    base = yaml.safe_load(path.read_text())
    if not isinstance(base, dict) or "extends" in base:
        raise ConfigError(f"extends: {path}: must be a whole config (one level of `extends` only)")
    for key, value in (config.get("changes") or {}).items():
        try:
            base = with_overrides(base, {key: value})
        except (KeyError, IndexError, ValueError, TypeError):
            raise ConfigError(f"changes.{key}: no such key in {path} to change") from None
    config.clear()
    config.update(base)


def read_config(path: Path) -> dict:
    """A config file as the Snakefile reads it (`extends` resolved), before the schema's defaults."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    config = yaml.safe_load(path.read_text()) or {}
    if "extends" in config:
        resolve_extends(config)
    return config


def load_config(path: Path, planning: bool = True) -> dict:
    """A config file as the workflow sees it: `extends` resolved, checked (`planning`: missing
    data paths warn), Hub models resolved to their snapshot folders, the schema's defaults filled."""
    from snakemake.utils import validate

    config = read_config(path)
    validate_config(config, planning)
    validate(config, str(SCHEMA))
    return config


def output_roots(config: dict) -> tuple[str, str, str]:
    """Where a study writes its results, logs and benchmark records. The default study keeps
    the top-level `logs/` and `benchmarks/`; a study with its own `results` root keeps them under
    it, so two studies sharing a working directory (and its toy world) never overwrite each
    other's records."""
    results = config.get("results", "results").rstrip("/")
    if results == "results":
        return results, "logs", "benchmarks"
    return results, f"{results}/logs", f"{results}/benchmarks"


def exit_on_error(fn, *args, **kwargs):
    """Run a parse-time step of the Snakefile; an EditPersistError becomes one line on
    stderr and exit status 1, before Snakemake creates anything."""
    try:
        return fn(*args, **kwargs)
    except EditPersistError as e:
        print(f"editpersist: {e}", file=sys.stderr)
        sys.exit(1)
