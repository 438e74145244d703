"""Editors: UCE and TIME (closed form on cross-attention), ReFACT (rank-one on the text encoder),
and uce-persist (UCE with a margin sized by simulated fine-tunes).

Each editor is one module with its config dataclass, its class and its `METHOD` (supported
modes, how its config block builds it); EDITORS is the one registry the config schema, the
workflow's wildcards, the grid and the benchmarks read. Adding an editor: docs/adding_an_editor.md.
"""

from . import persist, refact, time, uce
from .base import EditorMethod

EDITORS: dict[str, EditorMethod] = {m.name: m for m in (uce.METHOD, persist.METHOD, time.METHOD, refact.METHOD)}


def editor_block(editors: dict, name: str) -> dict:
    """The config block that builds editor `name`: its own, on top of the block of the editor
    it builds on (uce-persist: editors.uce plus its `persist` settings)."""
    base = EDITORS[name].builds_on
    return {**editors[base], **editors[name]} if base else dict(editors[name])
