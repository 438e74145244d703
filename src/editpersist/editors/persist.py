"""Persistence-aware UCE (`uce-persist`): a shielded UCE edit with a margin, sized by simulated
fine-tunes. The measurements behind it, its results and how its settings were chosen:
docs/uce-persist.md; the recipe: design.md section 5.

A fine-tune whose subject is the edited concept under a new word ("a sks circle" drawn green,
after circle -> blue) redraws the concept itself: the edit reaches "a sks circle" (it is a
circle), the fine-tune pulls it back, and every circle with it. Two changes to the solve answer
that:

* the shield: the edit also preserves "a <word> <concept>" for a list of words, so a subject of
  the concept's class under a new word starts from the unedited look: the fine-tune has no edit
  to pull back, and leaves the bare concept alone. It must reach words it does not list (a
  study's identifier is never in it), and which words do that depends on the tokenizer, so the
  list may differ per model family (docs/measurements/persist_rare_shield.py checks a list by
  holding its words out in folds). The shield's words together weigh `shield_weight` preserved
  prompts in the solve: more holds the rest of the model in place, less leaves the edit's own
  neighbours more room;
* the margin: the edit aims past the destination along its own direction, d + m (d - c), so the
  drift a fine-tune causes elsewhere has further to go. Neither change alone keeps an edit that
  such a fine-tune undoes; too much margin costs the rest of the model.

So the editor tries margins from small to large and keeps the first whose edit survives a
simulated fine-tune: a copy of the edited model fine-tuned (every denoiser weight) on a subject
of the concept the edit moves away from (the request's `original`, else its source), under a
word of its own that the shield does not list, drawn in a look the model already draws
(`look`: its own images of "a yellow square", captioned "a zwx square"). It uses only what the
editor may know, the model's own images, its own seed and learning rate, never the study's
fine-tune subjects, seeds or hyperparameters (tests/test_persist.py reads both configs and fails
if they meet).

The result is an ordinary UCE delta (the same layers, one closed-form solve): everything
downstream is unchanged. The sidecar records every margin tried and its simulated retention.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np

from ..errors import ConfigError
from ..families.base import restore_weights, save_weights
from ..finetuners.config import FinetuneConfig
from ..finetuners.core import ImageSet, finetune
from ..metrics.bootstrap import retention
from ..sampling import SamplingConfig, generate, stream_seed
from ..tasks.requests import EditRequest
from .base import BlockConfig, EditContext, EditDelta, EditorMethod, EditWork, MeterSpec, apply_delta, restore
from .uce import UCE, UCEConfig

log = logging.getLogger("editpersist")

# meter(pipe, request) -> share of images of request.source that show request.target
EditMeter = Callable[[object, EditRequest], float]


@dataclass(frozen=True)
class PersistConfig(BlockConfig):
    margins: tuple[float, ...] = (0.5, 1.0, 2.0)  # tried in this order; the first that survives is kept
    target: float = 0.9  # simulated retention a margin must reach
    identifier: str = "zwx"  # the simulated subject's made-up word (never the study's "sks")
    # How the simulated subject looks: a word the model draws, written before the concept
    # ("yellow": its own images of "a yellow square", captioned "a zwx square"). A subject that
    # differs from the concept's usual look is what a DreamBooth fine-tune has to learn, and so
    # moves weights; "" trains on the concept's usual look, which the model already draws.
    look: str = ""
    # Words w whose "a w <concept>" the edit preserves (never the study's "sks", nor the
    # simulation's word: the simulation checks that the shield reaches words it does not list):
    # one tuple for every family, or a tuple per family name. Which words reach an identifier the
    # shield does not list depends on the family's tokenizer: words tokenized as the identifier
    # is (on toy SD's CLIP, never-trained one-token words such as single letters), checked per
    # model (docs/uce-persist.md, "The method").
    shield: tuple[str, ...] | dict[str, tuple[str, ...]] = ("qbe", "vok", "hta", "lum", "dor", "jix")
    # How many preserved prompts the whole shield weighs in the solve, for every family or per
    # family name: each of its k words weighs shield_weight / k (the default: six words at 1
    # each). More weight holds the rest of the model in place but crowds the edit's own
    # neighbours; choose the smallest weight whose edited model keeps the quality captions as
    # plain UCE's does (docs/uce-persist.md, the shield-weight table).
    shield_weight: float | dict[str, float] = 6.0
    steps: int = 100
    lr: float = 2.0e-4
    batch: int = 8
    seed: int = 7919
    n_images: int = 16  # the simulated subject's images
    meter_images: int = 32  # images of the source prompt per measurement
    meter: str = "judge"  # "reader": the toy world's attribute reader

    def __post_init__(self):
        if not self.margins or any(m < 0 for m in self.margins) or list(self.margins) != sorted(self.margins):
            raise ValueError(f"persist.margins {self.margins}: non-negative and increasing")
        if not 0 < self.target <= 1:
            raise ValueError(f"persist.target {self.target}: in (0, 1]")
        words = self.shield_words()
        if any(len(w.split()) != 1 for w in (self.identifier, *words)):
            raise ValueError(f"persist.identifier and persist.shield: one word each, not {self.identifier!r}, "
                             f"{self.shield}")
        if self.identifier in words:
            raise ValueError(f"persist.identifier {self.identifier!r} is in the shield: the simulation would "
                             "test nothing the shield does not list")
        if not all(w > 0 for w in family_values(self.shield_weight)):
            raise ValueError(f"persist.shield_weight {self.shield_weight}: positive")
        if self.meter not in ("judge", "reader"):
            raise ValueError(f"persist.meter {self.meter!r}: 'judge' or 'reader'")

    def shield_words(self) -> tuple[str, ...]:
        """Every word the shield lists, for any family."""
        return tuple(w for words in family_values(self.shield) for w in words)

    def shield_for(self, family_name: str) -> tuple[str, ...]:
        return per_family(self.shield, "shield", "words", family_name)

    def shield_weight_for(self, family_name: str) -> float:
        return per_family(self.shield_weight, "shield_weight", "weight", family_name)

    def finetune_config(self) -> FinetuneConfig:
        return FinetuneConfig(method="full", steps=self.steps, lr=self.lr, batch=self.batch, seed=self.seed)


def family_values(value) -> list:
    """Every value of a setting given once for every family, or as a mapping from family name."""
    return list(value.values()) if isinstance(value, dict) else [value]


def per_family(value, key: str, what: str, family_name: str):
    """A setting given once for every family, or as a mapping from family name."""
    if not isinstance(value, dict):
        return value
    if family_name not in value:
        raise ConfigError(f"persist.{key}: no {what} given for family {family_name!r}")
    return value[family_name]


def with_identifier(prompt: str, identifier: str) -> str:
    """The DreamBooth caption of a prompt's subject: the identifier before its last word
    ("a square" -> "a zwx square")."""
    *head, noun = prompt.split()
    return " ".join([*head, identifier, noun])


def simulation_prompt(requests: list[EditRequest]) -> str:
    """The concept of the simulated subject: what the edit moves away from (the request's
    `original`, "a square" for a king drawn as a square; else its source)."""
    return requests[0].before


def shielded(request: EditRequest, words: tuple[str, ...], weight: float) -> EditRequest:
    """The request with "a <word> <concept>" preserved for every shield word, the shield weighing
    `weight` preserved prompts in all (each word weight / len(words)). A prompt the request
    preserves already keeps its own weight: UCE's solve takes a prompt's largest."""
    extra = tuple(with_identifier(request.source, w) for w in words)
    weights = tuple(w for _, w in request.weighted_preserve()) + tuple(weight / len(words) for _ in extra)
    return replace(request, preserve=request.preserve + extra, preserve_weights=weights)


def simulated_subject(pipe, family, requests: list[EditRequest], cfg: PersistConfig, sampling: SamplingConfig,
                      seed: int) -> ImageSet:
    prompt = simulation_prompt(requests)
    drawn = with_identifier(prompt, cfg.look) if cfg.look else prompt
    images, _ = generate(pipe, family, [drawn], cfg.n_images, sampling, base_seed=stream_seed(seed, "persist"))
    return ImageSet(images, [with_identifier(prompt, cfg.identifier)] * cfg.n_images)


def mean_share(meter: EditMeter, pipe, requests: list[EditRequest]) -> float:
    return float(np.mean([meter(pipe, r) for r in requests]))


class PersistentUCE:
    name = "uce-persist"

    def __init__(self, uce_cfg: UCEConfig, cfg: PersistConfig, meter: EditMeter, sampling: SamplingConfig,
                 seed: int = 0):
        self.uce_cfg = uce_cfg
        self.cfg = cfg
        self.meter = meter
        self.sampling = sampling
        self.seed = seed

    def simulate(self, pipe, family, delta: EditDelta, requests: list[EditRequest],
                 subject: ImageSet) -> tuple[float, float]:
        """The edit's share of target images on the edited model, then after the simulated
        fine-tune; the pipeline is left as it was."""
        originals = apply_delta(pipe, delta)
        saved = save_weights(pipe, family)
        try:
            edited = mean_share(self.meter, pipe, requests)
            finetune(pipe, family, subject, self.cfg.finetune_config())
            tuned = mean_share(self.meter, pipe, requests)
        finally:
            restore_weights(pipe, saved)
            restore(pipe, originals)
        return edited, tuned

    def edit(self, pipe, family, requests: list[EditRequest]) -> EditDelta:
        other = sorted({r.mode for r in requests} - set(METHOD.modes))
        if other:
            raise ValueError(f"uce-persist edits replace requests only, not {other[0]!r} ones")
        started = time.perf_counter()
        subject = simulated_subject(pipe, family, requests, self.cfg, self.sampling, self.seed)
        base = mean_share(self.meter, pipe, requests)
        shield, weight = self.cfg.shield_for(family.name), self.cfg.shield_weight_for(family.name)
        guarded = [shielded(r, shield, weight) for r in requests]
        trials, chosen = [], None
        for margin in self.cfg.margins:
            t0 = time.perf_counter()
            delta = UCE(replace(self.uce_cfg, margin=margin)).edit(pipe, family, guarded)
            edited, tuned = self.simulate(pipe, family, delta, requests, subject)
            # The base is not fine-tuned in the simulation: its share stands for base_ft's. An edit
            # that did not take has nothing to retain (0, not NaN, so the ladder moves on).
            kept = float(retention(base, edited, base, tuned)) if edited > base else 0.0
            trials.append({"margin": margin, "base": base, "edited": edited, "simulated": tuned,
                           "retention": kept, "seconds": round(time.perf_counter() - t0, 2)})
            log.info("uce-persist margin %.2f: target share %.2f edited, %.2f after the simulated fine-tune "
                     "(retention %.2f)", margin, edited, tuned, kept)
            if chosen is None or kept > chosen[0]:
                chosen = (kept, delta)
            if kept >= self.cfg.target:
                break
        delta = chosen[1]
        margin = delta.sidecar["hyperparameters"]["margin"]
        reached = chosen[0] >= self.cfg.target
        if reached:
            log.info("uce-persist kept margin %.2f: the first whose simulated retention (%.2f) reached %.2f", margin,
                     chosen[0], self.cfg.target)
        else:
            # A margin ladder that ends short of its target predicts an edit that may not survive
            # fine-tuning: say it where users look, not only in the sidecar.
            log.warning("uce-persist: no margin kept %.2f of the edit through the simulated fine-tune (best %.2f, "
                        "margin %.2f kept); the edit may not survive fine-tuning", self.cfg.target, chosen[0], margin)
        delta.sidecar.update(
            editor=self.name, persist=asdict(self.cfg), shield=list(shield), shield_weight=weight,
            persist_trials=trials, margin=margin,
            persist_reached=reached, simulation_subject=subject.captions[0],
            wall_s=round(time.perf_counter() - started, 4))
        return delta


def parse(block: dict) -> tuple[UCEConfig, PersistConfig]:
    """`editors.uce-persist`: the `editors.uce` block it builds on (`editor_block`) with its
    `persist` settings."""
    params = {k: v for k, v in block.items() if k not in ("debias", "persist")}
    return UCEConfig.from_block(params), PersistConfig.from_block(block["persist"])


def meters(block: dict) -> tuple[MeterSpec, ...]:
    """The edit's meter: the share of `meter_images` images of the source that show the target."""
    cfg = PersistConfig.from_block(block["persist"])
    return (MeterSpec("target_share", cfg.meter, cfg.meter_images, "persist_meter", modes=("replace",),
                      key="persist.meter"),)


def work(block: dict, family_name: str, task: str) -> EditWork:
    """Per margin tried (all of them, at most): a simulated full fine-tune and the meter's images
    of the source before and after it; the simulated subject's images once."""
    cfg = parse(block)[1]
    margins = len(cfg.margins)
    return EditWork(meter_images=margins * 2 * cfg.meter_images + cfg.n_images, simulated_steps=margins * cfg.steps,
                    simulated_batch=cfg.batch)


def build(block: dict, ctx: EditContext) -> PersistentUCE:
    if ctx.sampling is None:
        raise ValueError("uce-persist needs the sampling settings of its simulated subject's images")
    return PersistentUCE(*parse(block), ctx.meter("target_share", "uce-persist"), ctx.sampling, ctx.seed)


# A plain UCE solve per margin (assumed 5 s each, as UCE's); the simulated fine-tunes and the
# meter's images are priced from `work`.
METHOD = EditorMethod("uce-persist", modes=("replace",), build=build, parse=parse, reference_gpu_s=15.0,
                      meters=meters, work=work, builds_on="uce")
