"""One edit job: load a model state, build the editor from config, write the edit delta."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..editors.base import EditDelta, Editor
from ..tasks.requests import EditRequest, attribute_prompt
from ..editors.refact import ReFACT, ReFACTConfig, compute_and_cache_stats
from ..editors.time import TIME, TIMEConfig
from ..editors.uce import UCE, UCEConfig
from ..errors import ConfigError
from ..families import get_family
from ..sampling import SamplingConfig, generate, stream_seed
from ..judges.clip import ClipJudge
from ..states import load_model_state
from ..tasks.cases import EditCase
from ..toy.reader import read_colors

log = logging.getLogger("editpersist")


def ratio_meter(family, sampling: SamplingConfig, n_images: int, seed: int, classify):
    """A UCE debias meter: share of `n_images` generated images of the request's source prompt
    that `classify(images, request)` (an attribute index per image, -1 for none) assigns to each
    attribute."""

    def meter(pipe, request: EditRequest) -> list[float]:
        images, _ = generate(pipe, family, [request.source], n_images, sampling, base_seed=seed)
        choice = np.asarray(classify(images, request))
        return [float(np.mean(choice == k)) for k in range(len(request.attributes))]

    return meter


def judge_classifier(judge: ClipJudge):
    """The judge's argmax over the source prompt with each attribute written next to its concept
    (100 * cos, as in the two-way decision): how the evaluation's debias_score classifies too."""
    return lambda images, r: judge.choose(
        judge.image_features(images), [attribute_prompt(a, r.source, r.concept) for a in r.attributes])


def reader_classifier(images, request: EditRequest) -> list[int]:
    """The toy world's ground truth: the colour drawn, read from the pixels."""
    return [request.attributes.index(c) if c in request.attributes else -1 for c in read_colors(images)]


def debias_meter(editor_cfg: dict, judge_dir: str | None, family, sampling: SamplingConfig, seed: int, device: str):
    cfg = editor_cfg.get("debias", {})
    n, seed = cfg.get("n_images", 32), stream_seed(seed, "debias_meter")
    if cfg.get("meter", "judge") == "reader":
        return ratio_meter(family, sampling, n, seed, reader_classifier)
    if judge_dir is None:
        raise ConfigError("judge: a debias edit needs a CLIP judge to measure attribute ratios")
    return ratio_meter(family, sampling, n, seed, judge_classifier(ClipJudge.load(judge_dir, device=device)))


REFACT_RUN_KEYS = ("lr", "max_steps", "stop_prob", "max_norm_factor", "weight_decay", "loss", "ridge")


def refact_layer(cfg: dict, family_name: str, task: str | None) -> int | list[int]:
    """The edited layer of a family for a task: `layers.<family>` is a number (every task) or
    {task: layer} (ReFACT's SD 1.4 runs: appearance 9, role 7). Without a task, every layer
    the family uses (what the statistics rule must cover)."""
    if family_name not in cfg["layers"]:
        raise ConfigError(f"editors.refact.layers: no layer given for family {family_name!r}")
    by_task = cfg["layers"][family_name]
    if isinstance(by_task, int):
        return by_task if task is not None else [by_task]
    if task is None:
        return sorted(set(by_task.values()))
    if task not in by_task:
        raise ConfigError(f"editors.refact.layers.{family_name}: no layer given for task {task!r}")
    return by_task[task]


def refact_config(cfg: dict, family_name: str, task: str, seed: int = 0) -> ReFACTConfig:
    return ReFACTConfig(layer=refact_layer(cfg, family_name, task), templates=tuple(cfg["templates"]), seed=seed,
                        flux_clip_layer=get_family(family_name).pooled_clip_layer(cfg["layers"]),
                        **{k: cfg[k] for k in REFACT_RUN_KEYS if k in cfg})


def refact_stat_sites(cfg: dict, family_name: str) -> list:
    """Every site whose statistics some task's edit reads (one file per site)."""
    family = get_family(family_name)
    sites = [s for layer in refact_layer(cfg, family_name, None)
             for s in family.refact_sites(layer, family.pooled_clip_layer(cfg["layers"]))]
    return list(dict.fromkeys(sites))


def refact_corpus(cfg: dict, seed: int) -> list[str]:
    """Texts for ReFACT's layer statistics: the toy captions, or a file with one text per line."""
    if cfg["corpus"] == "toy":
        from ..toy.world import WorldSpec, sample_captions

        return [s.caption for s in sample_captions(WorldSpec(), cfg["corpus_size"], np.random.default_rng([seed, 3]))]
    path = Path(cfg["corpus"])
    if not path.is_file():
        raise ConfigError(f"editors.refact.corpus: file {path} not found")
    texts = [t.strip() for t in path.read_text().splitlines() if t.strip()][: cfg["corpus_size"]]
    if not texts:
        raise ConfigError(f"editors.refact.corpus: {path} has no texts")
    return texts


def run_refact_stats(model_dir: Path, family_name: str, cfg: dict, seed: int, device: str, out: Path) -> None:
    from ..io import atomic_dir

    family = get_family(family_name)
    pipe = family.load(model_dir, device=device)
    sites = refact_stat_sites(cfg, family_name)
    with atomic_dir(out) as tmp:
        compute_and_cache_stats(pipe, sites, refact_corpus(cfg, seed), tmp)


def build_editor(name: str, cfg: dict, family_name: str, task: str, ratio_meter=None, stats_dir: Path | None = None,
                 seed: int = 0) -> Editor:
    if name == "refact":
        return ReFACT(refact_config(cfg, family_name, task, seed), stats_dir)
    if name == "uce":
        params = {k: v for k, v in cfg.items() if k != "debias"}
        # n_images and meter configure the meter (debias_meter), not the solve.
        loop = {f"debias_{k}": v for k, v in cfg.get("debias", {}).items() if k not in ("n_images", "meter")}
        return UCE(UCEConfig(**params, **loop), ratio_meter=ratio_meter)
    if name == "time":
        return TIME(TIMEConfig(**cfg))
    raise ConfigError(f"editors: unknown editor {name!r}; expected one of ['refact', 'time', 'uce']")


def run_edit(model_dir: Path, family_name: str, editor_name: str, editor_cfg: dict, case: EditCase,
             judge_dir: str | None, sampling: SamplingConfig, seed: int, device: str, out: Path,
             stats_dir: Path | None = None, layers: list[Path] = ()) -> EditDelta:
    """Edit a model state (the base, or with `layers` a fine-tuned state: re-editing)."""
    family, pipe = load_model_state(model_dir, family_name, list(layers), device)
    meter = None
    if any(r.mode == "debias" for r in case.requests):
        meter = debias_meter(editor_cfg, judge_dir, family, sampling, seed, device)
    editor = build_editor(editor_name, editor_cfg, family_name, case.task, meter, stats_dir, seed)
    delta = editor.edit(pipe, family, list(case.requests))
    delta.sidecar.update(task=case.task, edit=case.name, model_dir=str(model_dir), family=family_name)
    delta.save(out)
    log.info("%s %s/%s: %d tensors in %.2f s", editor_name, case.task, case.name, len(delta.tensors),
             delta.sidecar["wall_s"])
    return delta
