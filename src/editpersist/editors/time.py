"""TIME (Orgad, Kawar and Belinkov, ICCV 2023): UCE's solve with TIME's choices.

lam = 0.1, no preserve term, every token position from the last word token on
aligned between source and destination prompts, and only the value projections
(optionally the keys too, `edit_keys`).
"""

from __future__ import annotations

import time as _time
from dataclasses import asdict, dataclass

from .base import EditDelta, EditRequest, make_sidecar
from .uce import UCE, UCEConfig


@dataclass(frozen=True)
class TIMEConfig:
    lam: float = 0.1
    edit_keys: bool = False


class TIME:
    name = "time"

    def __init__(self, cfg: TIMEConfig = TIMEConfig()):
        self.cfg = cfg
        self._uce = UCE(UCEConfig(lam=cfg.lam, s_e=1.0, s_p=0.0, token_mode="aligned"))

    def edit(self, pipe, family, requests: list[EditRequest]) -> EditDelta:
        started = _time.perf_counter()
        bad = [r for r in requests if r.mode != "replace"]
        if bad:
            raise ValueError(f"TIME only replaces concepts; got mode {bad[0].mode!r} for {bad[0].source!r}")
        plain = [EditRequest(r.source, r.target) for r in requests]  # TIME has no preserve term
        delta = self._uce.edit(pipe, family, plain)
        keep = {k: v for k, v in delta.tensors.items() if self.cfg.edit_keys or ".to_k." not in k}
        return EditDelta(keep, make_sidecar(self.name, asdict(self.cfg), sorted(keep), requests, started))
