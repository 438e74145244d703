"""Editors: UCE and TIME (closed form on cross-attention), ReFACT (rank-one on the text encoder)."""

from .refact import ReFACT, ReFACTConfig
from .time import TIME, TIMEConfig
from .uce import UCE, UCEConfig

# Which edit modes each editor supports: TIME and ReFACT only replace concepts.
EDITOR_MODES = {"uce": ("replace", "erase", "debias"), "time": ("replace",), "refact": ("replace",)}

__all__ = ["UCE", "UCEConfig", "TIME", "TIMEConfig", "ReFACT", "ReFACTConfig", "EDITOR_MODES"]
