"""Editors: UCE and TIME (closed form on cross-attention), ReFACT (rank-one on the text encoder),
and uce-persist (UCE with a margin sized by simulated fine-tunes).

Each editor is one module with its config dataclass, its class and its `METHOD` (supported
modes, how its config block builds it); EDITORS is the one registry the config schema, the
workflow's wildcards, the grid and the benchmarks read. Adding an editor: docs/adding_an_editor.md.
"""

from . import persist, refact, time, uce
from .base import EditorMethod


def register(methods) -> dict[str, EditorMethod]:
    """The registry of `methods`: a name registered twice, or a variant of an editor that is not
    registered before it, fails at import (as peft's register_peft_method does)."""
    registry: dict[str, EditorMethod] = {}
    for m in methods:
        if m.name in registry:
            raise ValueError(f"editor {m.name!r} is registered twice")
        if m.builds_on is not None and m.builds_on not in registry:
            raise ValueError(f"editor {m.name!r} builds on {m.builds_on!r}, which is not registered before it")
        registry[m.name] = m
    return registry


EDITORS: dict[str, EditorMethod] = register((uce.METHOD, persist.METHOD, time.METHOD, refact.METHOD))


def check_editor_blocks(config: dict, planning: bool = False) -> None:
    """Every editor block of a config read by its editor's own parser (EditorMethod.parse) and
    meters, after the schema: one line naming the editor and key for a block its config
    dataclass refuses, a variant whose base editor has no block, a meter reading with the toy
    world's reader on a model outside it, or a file its statistics read that does not exist
    (`planning`, a dry run: a warning)."""
    from ..config import is_built, missing_path, real_models
    from ..errors import ConfigError

    editors, real = config["editors"], real_models(config)
    for name in editors:
        base = EDITORS[name].builds_on
        if base is not None and base not in editors:
            raise ConfigError(f"editors.{name}: builds on editors.{base} (its settings), which is missing")
        try:
            block = editor_block(editors, name)
            EDITORS[name].parse(block)
            specs = EDITORS[name].meters(block)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"editors.{name}: {e}") from e
        for spec in specs:
            if spec.by == "reader" and real:
                raise ConfigError(f"editors.{name}.{spec.key}: 'reader' exists only in the toy world, but model "
                                  f"{real[0]!r} is not a toy model; use 'judge'")
        statistics = EDITORS[name].statistics
        for key, path in (statistics.files(block) if statistics else {}).items():
            if not is_built(path):
                missing_path(f"editors.{name}.{key}", path, planning)


def editor_meters(editors: dict, name: str) -> tuple:
    """The meters (MeterSpec) editor `name`'s config block asks the edit stage for."""
    return EDITORS[name].meters(editor_block(editors, name))


def editor_block(editors: dict, name: str) -> dict:
    """The config block that builds editor `name`: its own, on top of the block of the editor
    it builds on (uce-persist: editors.uce plus its `persist` settings)."""
    base = EDITORS[name].builds_on
    return {**editors[base], **editors[name]} if base else dict(editors[name])
