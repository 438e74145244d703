"""Editors: UCE and TIME (closed form on cross-attention), ReFACT (rank-one on the text encoder).

Each editor is one module with its config dataclass, its class and its `METHOD` (supported
modes, how its config block builds it); EDITORS is the one registry the config schema, the
workflow's wildcards, the grid and the benchmarks read. Adding an editor: docs/adding_an_editor.md.
"""

from . import refact, time, uce
from .base import EditorMethod

EDITORS: dict[str, EditorMethod] = {m.name: m for m in (uce.METHOD, time.METHOD, refact.METHOD)}
