"""Model families by name: `get_family("sd")`."""

from ..errors import ConfigError
from .base import ModelFamily
from .flux import FAMILY as FLUX
from .sd import FAMILY as SD
from .sdxl import FAMILY as SDXL

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (SD, SDXL, FLUX)}


def get_family(name: str) -> ModelFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"family: unknown model family {name!r}; expected one of {sorted(FAMILIES)}") from None
