"""Editors by name."""

from ..errors import ConfigError
from .uce import UCE, UCEConfig


def editor_names() -> list[str]:
    return ["uce", "time"]


def get_editor_class(name: str):
    from .time import TIME

    table = {"uce": UCE, "time": TIME}
    try:
        return table[name]
    except KeyError:
        raise ConfigError(f"editor: unknown editor {name!r}; expected one of {sorted(table)}") from None


__all__ = ["UCE", "UCEConfig", "get_editor_class", "editor_names"]
