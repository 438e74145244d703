"""Editors: UCE and TIME (closed form on cross-attention), ReFACT (rank-one on the text encoder),
and uce-persist (UCE with a margin sized by simulated fine-tunes).

Each editor is one module with its config dataclass, its class and its `METHOD` (supported
modes, how its config block builds it); EDITORS is the one registry the config schema, the
workflow's wildcards, the grid and the benchmarks read. Adding an editor: docs/adding_an_editor.md.
"""

from . import persist, refact, time, uce
from .base import EditorMethod

EDITORS: dict[str, EditorMethod] = {m.name: m for m in (uce.METHOD, persist.METHOD, time.METHOD, refact.METHOD)}


def check_editor_blocks(editors: dict) -> None:
    """Every editor block of a config read by its editor's own parser (EditorMethod.parse): one
    line naming the editor for a block its config dataclass refuses."""
    from ..errors import ConfigError

    for name in editors:
        try:
            EDITORS[name].parse(editor_block(editors, name))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"editors.{name}: {e}") from e


def editor_block(editors: dict, name: str) -> dict:
    """The config block that builds editor `name`: its own, on top of the block of the editor
    it builds on (uce-persist: editors.uce plus its `persist` settings)."""
    base = EDITORS[name].builds_on
    return {**editors[base], **editors[name]} if base else dict(editors[name])
