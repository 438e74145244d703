"""One edit job: load a model state, build the editor from config, write the edit delta."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .editors.base import EditDelta
from .editors.time import TIME, TIMEConfig
from .editors.uce import UCE, UCEConfig
from .errors import ConfigError
from .families import get_family
from .generate import SamplingConfig, generate
from .judges.clip import ClipJudge
from .tasks.cases import EditCase

log = logging.getLogger("editpersist")


def judge_ratio_meter(judge: ClipJudge, family, sampling: SamplingConfig, n_images: int, seed: int):
    """Share of generated images the judge assigns to each attribute (argmax over the
    attribute prompts, each scored with 100 * cos as in the two-way decision)."""
    from .editors.uce import attribute_prompt

    def meter(pipe, prompt: str, attributes: tuple[str, ...]) -> list[float]:
        images, _ = generate(pipe, family, [prompt], n_images, sampling, base_seed=seed)
        img = judge.image_features(images)
        txt = judge.text_features([attribute_prompt(a, prompt) for a in attributes])
        choice = (img @ txt.T).argmax(1).numpy()
        return [float(np.mean(choice == k)) for k in range(len(attributes))]

    return meter


def build_editor(name: str, cfg: dict, ratio_meter=None):
    if name == "uce":
        params = {k: v for k, v in cfg.items() if k != "debias"}
        debias = cfg.get("debias", {})
        return UCE(UCEConfig(**params, **{f"debias_{k}": v for k, v in debias.items() if k != "n_images"}),
                   ratio_meter=ratio_meter)
    if name == "time":
        return TIME(TIMEConfig(**cfg))
    raise ConfigError(f"editors: unknown editor {name!r}; expected one of ['time', 'uce']")


def run_edit(model_dir: Path, family_name: str, editor_name: str, editor_cfg: dict, case: EditCase,
             judge_dir: str | None, sampling: SamplingConfig, seed: int, device: str, out: Path) -> EditDelta:
    family = get_family(family_name)
    pipe = family.load(model_dir, device=device)
    meter = None
    if any(r.mode == "debias" for r in case.requests):
        if judge_dir is None:
            raise ConfigError("judge: a debias edit needs a CLIP judge to measure attribute ratios")
        n = editor_cfg.get("debias", {}).get("n_images", 32)
        meter = judge_ratio_meter(ClipJudge.load(judge_dir, device=device), family, sampling, n, seed)
    editor = build_editor(editor_name, editor_cfg, meter)
    delta = editor.edit(pipe, family, list(case.requests))
    delta.sidecar.update(task=case.task, edit=case.name, model_dir=str(model_dir), family=family_name)
    delta.save(out)
    log.info("%s %s/%s: %d tensors in %.2f s", editor_name, case.task, case.name, len(delta.tensors),
             delta.sidecar["wall_s"])
    return delta
