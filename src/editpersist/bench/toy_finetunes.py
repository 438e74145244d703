"""Choosing the toy world's fine-tune settings away from the study: `python -m editpersist.bench toy-finetunes`.

A fine-tune says something about persistence only if it learns its subject and leaves the
edits' targets drawable (evaluation.min_ft_fidelity, min_target_reach). This search picks, per
toy model and fine-tuner, settings that do both, without the study's fine-tune seeds, subject,
data seed or evaluation images:

* tuning subjects: other colours and shapes than the study's ("sks-square" purple), each drawn
  in a colour its shape does not default to, as the study's is (`TUNING_SUBJECTS`);
* tuning seeds (`TUNING_SEEDS`) for the training noise and for the subject's renders;
* the unedited model only (the study fine-tunes edited models too; its filters report those);
* images from a seed stream of their own ("finetune_fit"), read by the toy reader.

For every candidate (a multiple of the config's steps and learning rate) and tuning run it
records the subject fidelity (share of "a sks <class>" images showing the subject, as the
study's ft_fidelity) and each edit target's reach (share of "a blue circle", "a triangle", ...
images drawn as asked, as the study's target_reach). A candidate qualifies when its worst run
clears both bars by `margin` (10 images per prompt decide a study seed, so a setting sitting at
the bar would fail about half its seeds); among qualifying ones the cheapest (fewest steps,
then the smaller learning rate) is chosen, so the search stops there (--all runs every candidate).
Where none qualifies, the candidate whose worst run is best is chosen and said to fall short. Writes results/bench/toy_finetunes.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

log = logging.getLogger("editpersist")

# Shapes in a colour they do not default to, none of them the study's subject or a held-out
# pair (WorldSpec.held_out_pairs); names of their own, so no state or seed is shared with the study.
TUNING_SUBJECTS = ({"name": "tune-yellow-square", "class": "square", "color": "yellow"},
                   {"name": "tune-red-triangle", "class": "triangle", "color": "red"})
TUNING_SEEDS = (100, 101)
STEP_FACTORS = (1.0, 2.0)
LR_FACTORS = (0.5, 1.0, 1.5, 2.0, 3.0)


@dataclass(frozen=True)
class FitRun:
    """One fine-tune of the unedited model and what it still draws."""

    model: str
    finetuner: str
    steps: int
    lr: float
    subject: str
    seed: int
    subject_fidelity: float
    target_reach: dict[str, float]
    wall_s: float

    @property
    def worst(self) -> float:
        return min([self.subject_fidelity, *self.target_reach.values()])


def candidates(settings: dict, step_factors=STEP_FACTORS, lr_factors=LR_FACTORS) -> list[dict]:
    """Multiples of the configured steps and learning rate, cheapest first."""
    out = [{**settings, "steps": max(1, round(settings["steps"] * s)), "lr": settings["lr"] * f}
           for s, f in itertools.product(step_factors, lr_factors)]
    return sorted(out, key=lambda c: (c["steps"], c["lr"]))


def qualifies(runs: list[FitRun], min_fidelity: float, min_reach: float, margin: float) -> bool:
    return bool(runs) and all(r.subject_fidelity >= min_fidelity + margin
                              and all(v >= min_reach + margin for v in r.target_reach.values()) for r in runs)


def choose(runs: list[FitRun], min_fidelity: float, min_reach: float, margin: float) -> tuple[int, float, bool]:
    """(steps, lr, qualified): the cheapest qualifying candidate; where none qualifies, the one
    whose worst run is best (a best effort, reported as such)."""
    by_candidate: dict[tuple[int, float], list[FitRun]] = {}
    for r in runs:
        by_candidate.setdefault((r.steps, r.lr), []).append(r)
    ok = [k for k, rs in by_candidate.items() if qualifies(rs, min_fidelity, min_reach, margin)]
    if ok:
        return (*min(ok), True)
    best = max(by_candidate, key=lambda k: (min(r.worst for r in by_candidate[k]), [-x for x in k]))
    return (*best, False)


def search_start(config: dict, model: str, finetuner: str, shared: bool) -> dict:
    """The settings the candidates multiply: the model's own (`finetuner_settings`), or with
    `shared` the `finetuners:` block's alone, for a model whose own were chosen on a build that
    has since changed."""
    from ..grid import finetuner_settings

    return dict(config["finetuners"][finetuner]) if shared else finetuner_settings(config, model, finetuner)


def edit_targets(cases: dict) -> list[str]:
    """Every target prompt of the study's edits ("a blue circle", "a triangle")."""
    return sorted({c.target.prompt for task in cases.values() for c in task if c.target is not None})


def fit_run(model: dict, finetuner: str, settings: dict, subject_spec: dict, seed: int, targets: list[str],
            config: dict, reader, n_images: int, device: str) -> FitRun:
    from ..finetuners.config import FinetuneConfig
    from ..finetuners.core import finetune
    from ..finetuners.subjects import ToySubject
    from ..metrics.reader_metrics import matches, text_attributes
    from ..sampling import SamplingConfig, generate_counts, stream_seed
    from ..stages.finetune import class_image_set
    from ..states import load_model_state

    start = time.perf_counter()
    subject = ToySubject(subject_spec["name"], subject_spec["class"], subject_spec["color"])
    sampling = SamplingConfig(**{**config.get("sampling", {}), **model.get("sampling", {})})
    family, pipe = load_model_state(Path(model["path"]), model["family"], [], device)
    # Every setting the study's fine-tune reads (as workflow/scripts/finetune.py builds it), not a
    # chosen few; seeds are the search's own, and snapshots feed only the study's curves.
    cfg = FinetuneConfig(finetuner, seed=seed, **{k: v for k, v in settings.items() if k not in ("seeds", "snapshots")})
    prior = (class_image_set(pipe, family, subject, config["finetune_data"]["n_class_images"], sampling, seed)
             if cfg.spec.prior_preservation else None)
    finetune(pipe, family, subject.images(config["finetune_data"]["n_images"], seed, sampling.height), cfg,
             prior=prior)
    prompts = [subject.instance_prompt, *targets]
    images, meta = generate_counts(pipe, family, {p: n_images for p in prompts}, sampling,
                                   base_seed=stream_seed(seed, "finetune_fit"))
    reads = reader.read(images)
    shares = {p: float(np.mean([matches(r, subject.reader_attributes if p == subject.instance_prompt
                                        else text_attributes(p)) for r, (q, _, _) in zip(reads, meta) if q == p]))
              for p in prompts}
    return FitRun(model["name"], finetuner, cfg.steps, cfg.lr, subject.name, seed, shares.pop(subject.instance_prompt),
                  shares, time.perf_counter() - start)


def markdown(runs: list[FitRun], chosen: dict, bars: dict) -> str:
    lines = [f"Bars: subject fidelity >= {bars['min_fidelity']:g} and every target's reach >= "
             f"{bars['min_reach']:g}, each by a margin of {bars['margin']:g}, in every tuning run.", "",
             "| model | fine-tuner | steps | lr | subject | seed | subject fidelity | target reach | wall (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        reach = ", ".join(f"{p}: {v:.2f}" for p, v in r.target_reach.items())
        lines.append(f"| {r.model} | {r.finetuner} | {r.steps} | {r.lr:g} | {r.subject} | {r.seed} | "
                     f"{r.subject_fidelity:.2f} | {reach} | {r.wall_s:.1f} |")
    lines += ["", "| model | fine-tuner | chosen (steps, lr) |", "| --- | --- | --- |"]
    for (model, ft), (steps, lr, ok) in chosen.items():
        lines.append(f"| {model} | {ft} | {steps}, {lr:g}{'' if ok else ' (none qualifies: the best worst run)'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    import yaml
    from tqdm.auto import tqdm

    from ..io import atomic_path
    from ..toy.reader import AttributeReader

    p = argparse.ArgumentParser(prog="python -m editpersist.bench toy-finetunes", description=__doc__.split("\n")[0])
    p.add_argument("--configfile", default="config/config.yaml")
    p.add_argument("--models", nargs="*", help="toy model names (default: every model of the config)")
    p.add_argument("--finetuners", nargs="*", help="default: every fine-tuner of the config")
    p.add_argument("--step-factors", type=float, nargs="+", default=list(STEP_FACTORS))
    p.add_argument("--lr-factors", type=float, nargs="+", default=list(LR_FACTORS))
    p.add_argument("--images", type=int, default=32, help="images per prompt and run")
    p.add_argument("--margin", type=float, default=0.1)
    p.add_argument("--out", default="results/bench/toy_finetunes")
    p.add_argument("--all", action="store_true", help="run every candidate and tuning run, not only until a choice")
    p.add_argument("--shared-settings", action="store_true",
                   help="start from the finetuners: block's settings, not the model entries' own")
    args = p.parse_args(sys.argv[2:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from ..config import validate_config
    from ..grid import studied_finetunes
    from ..tasks import load_cases

    config = yaml.safe_load(Path(args.configfile).read_text())
    validate_config(config)
    models = [m for m in config["models"] if not args.models or m["name"] in args.models]
    if not models or any(not m["path"].startswith("resources/toy/") for m in models):
        raise ConfigError("bench toy-finetunes: --models must name toy models of the config")
    reader = AttributeReader.load(Path("resources/toy/reader"))
    cases = load_cases(config["tasks"])
    targets = edit_targets(cases)
    ev = config.get("evaluation", {})
    bars = {"min_fidelity": ev.get("min_ft_fidelity", 0.8), "min_reach": ev.get("min_target_reach", 0.8),
            "margin": args.margin}
    # A fine-tune no cell of the study runs (exclude:) is searched only when named with --finetuners.
    studied = studied_finetunes(config, cases)
    pairs = [(m, ft) for m in models for ft in (args.finetuners or config["finetuners"])
             if args.finetuners or (m["name"], ft) in studied]
    runs, chosen = [], {}
    for m, ft in tqdm(pairs, desc="toy fine-tunes", mininterval=5.0):
        for c in candidates(search_start(config, m["name"], ft, args.shared_settings), args.step_factors,
                            args.lr_factors):
            mine = []
            # Cheapest first, every tuning run of each candidate tried (a candidate that qualifies
            # nowhere is chosen by its worst run); the search stops at the first that qualifies
            # (--all: every candidate).
            for s, seed in zip(TUNING_SUBJECTS, TUNING_SEEDS):
                mine.append(fit_run(m, ft, c, s, seed, targets, config, reader, args.images, "cpu"))
                log.info("%s", mine[-1])
            runs += mine
            if not args.all and qualifies(mine, bars["min_fidelity"], bars["min_reach"], bars["margin"]):
                break
        chosen[(m["name"], ft)] = choose([r for r in runs if (r.model, r.finetuner) == (m["name"], ft)],
                                         bars["min_fidelity"], bars["min_reach"], bars["margin"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"bars": bars, "targets": targets, "tuning_subjects": TUNING_SUBJECTS, "tuning_seeds": TUNING_SEEDS,
              "images_per_prompt": args.images, "runs": [asdict(r) for r in runs],
              "chosen": [{"model": k[0], "finetuner": k[1], "steps": v[0], "lr": v[1], "qualified": v[2]}
                         for k, v in chosen.items()]}
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    table = markdown(runs, chosen, bars)
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(table)
    print(table)
