"""Specificity of the stress study's edited models, read on enough images to resolve 0.02
(README, "Edits that survive fine-tuning", the issue's bars).

The study reads specificity on 10 images of each negative prompt of the edited model, 30 in all
on a role edit, so one image moves it by 0.033: a bar of "within 0.02 of plain UCE" cannot be
read off it. This script loads the study's own edits (results/stress/states/<model>/edit/...,
plain UCE and uce-persist), draws N images of each negative prompt from a seed stream no study
image uses, the same noise for every state, and reads them with the reader as the study does
(`kept_hits`). It prints each state's specificity and uce-persist's difference to plain UCE with
a 95 % paired bootstrap interval over the images.

Run from the repository root after the stress study:
    python docs/measurements/persist_specificity.py [N]
Writes results/persist_specificity.json.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from editpersist.config import resolve_extends
from editpersist.metrics.bootstrap import percentile_interval
from editpersist.metrics.reader_metrics import kept_hits
from editpersist.sampling import SamplingConfig, generate
from editpersist.states import load_model_state
from editpersist.tasks import load_cases
from editpersist.toy.reader import AttributeReader

STATES = "results/stress/states/{model}/edit/{editor}/{task}/{case}.safetensors"
EDITORS = ("uce", "uce-persist")
# Above every stream of editpersist.sampling.SEED_STREAMS, so no study image shares this noise;
# and not 90_000_049, whose queens the choice of toy SD's shield weight was read on (run 7).
BASE_SEED = 91_000_033
REPLICATES = 2000


def kept(pipe, family, case, reader, sampling: SamplingConfig, n: int) -> np.ndarray:
    """(images,) 1 where an image of a negative prompt still shows its unedited attribute,
    negative prompt by negative prompt."""
    hits = []
    for probe in case.negatives:
        images, _ = generate(pipe, family, [probe.prompt], n, sampling, base_seed=BASE_SEED)
        hits += kept_hits(case, probe, reader.read(images))
    return np.array(hits, dtype=float)


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """mean(b) - mean(a) over paired images, with its 95 % bootstrap interval."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(len(a), size=(REPLICATES, len(a)))
    low, high = percentile_interval(b[idx].mean(1) - a[idx].mean(1))
    return float(b.mean() - a.mean()), low, high


def main(n: int) -> None:
    torch.set_num_threads(2)
    config = yaml.safe_load(open("config/stress.yaml"))
    resolve_extends(config)
    sampling = SamplingConfig(**config["sampling"])
    reader = AttributeReader.load(Path("resources/toy/reader"))
    cases = load_cases(config["tasks"])
    out = {"images_per_negative": n, "base_seed": BASE_SEED, "edits": []}
    for entry in config["models"]:
        for task in ("appearance", "role"):
            case = cases[task][0]
            row = {"model": entry["name"], "task": task, "case": case.name}
            for state in ("base", *EDITORS):
                layers = [] if state == "base" else [Path(STATES.format(model=entry["name"], editor=state, task=task,
                                                                         case=case.name))]
                family, pipe = load_model_state(Path(entry["path"]), entry["family"], layers, "cpu")
                row[state] = kept(pipe, family, case, reader, sampling, n)
            diff, low, high = paired_difference(row["uce"], row["uce-persist"])
            summary = {**{k: row[k] for k in ("model", "task", "case")},
                       **{s: float(row[s].mean()) for s in ("base", *EDITORS)},
                       "persist_minus_uce": diff, "ci": [low, high]}
            out["edits"].append(summary)
            print(f"{summary['model']} {task}: specificity base {summary['base']:.3f}, uce {summary['uce']:.3f}, "
                  f"uce-persist {summary['uce-persist']:.3f}; difference {diff:+.3f} [{low:+.3f}, {high:+.3f}] "
                  f"({len(case.negatives)} negative prompts x {n} images)", flush=True)
    Path("results/persist_specificity.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
