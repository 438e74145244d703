"""Semantic checks of a workflow config, beyond what the JSON schema can say."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .errors import ConfigError
from .families import FAMILIES

TOY_PREFIX = "resources/toy/models/"


def check_config(config: dict) -> None:
    """Raise ConfigError with the offending key for the first problem found."""
    models = config.get("models", [])
    dupes = [n for n, k in Counter(m["name"] for m in models).items() if k > 1]
    if dupes:
        raise ConfigError(f"models: duplicate model name {dupes[0]!r}")
    for i, m in enumerate(models):
        if m["family"] not in FAMILIES:
            raise ConfigError(f"models[{i}].family: unknown family {m['family']!r}; expected one of {sorted(FAMILIES)}")
        # Toy models are built by the workflow; every other path must already exist
        # unless downloads are allowed (then it may be a hub id).
        if not m["path"].startswith(TOY_PREFIX) and not config.get("allow_download", False):
            if not Path(m["path"]).is_dir():
                raise ConfigError(f"models[{i}].path: {m['path']!r} does not exist (and allow_download is false)")
    check_evaluation(config)


def check_evaluation(config: dict) -> None:
    ev = config.get("evaluation", {})
    real = [m["name"] for m in config.get("models", []) if not m["path"].startswith(TOY_PREFIX)]
    if ev.get("scorer", "reader") == "reader" and real:
        raise ConfigError(f"evaluation.scorer: 'reader' exists only in the toy world, but model {real[0]!r} is "
                          "not a toy model; use 'judge'")
    for key in ("reedit", "transfer"):
        missing = [f for f in ev.get(key, []) if f not in config.get("finetuners", {})]
        if missing:
            raise ConfigError(f"evaluation.{key}: fine-tuner {missing[0]!r} is not in finetuners")
