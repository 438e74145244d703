"""Specificity of the stress study's edited models, read on enough images to resolve 0.02
(docs/uce-persist.md, Results: specificity within 0.02 of plain UCE's).

The study reads specificity on 10 images of each negative prompt of the edited model, 30 in all
on a role edit, so one image moves it by 0.033: a bar of "within 0.02 of plain UCE" cannot be
read off it. This script loads the study's own edits (results/stress/states/<model>/edit/...,
plain UCE and uce-persist), draws N images of each negative prompt from a seed stream no study
image uses, the same noise for every state, and reads them with the reader as the study does
(`kept_hits`). It prints each state's specificity and uce-persist's difference to plain UCE with
the study's 95 % paired bootstrap interval (negative prompts, and images within them, resampled
alike for both states; evaluation.bootstrap's samples and seed).

Run from the repository root after the stress study:
    python docs/measurements/persist_specificity.py [N]
Writes results/persist_specificity.json.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from editpersist.editors.base import restore
from editpersist.metrics.bootstrap import draw_indices, draw_seeds, percentile_interval, resample
from editpersist.metrics.reader_metrics import kept_hits
from editpersist.sampling import SamplingConfig, generate
from editpersist.states import apply_layer, load_model_state
from editpersist.tasks import load_cases
from editpersist.toy.reader import AttributeReader
from persist_tradeoff import READER, stress_config  # this folder is on sys.path as a script

STATES = "results/stress/states/{model}/edit/{editor}/{task}/{case}.safetensors"
EDITORS = ("uce", "uce-persist")
# Above every stream of editpersist.sampling.SEED_STREAMS, so no study image shares this noise;
# and not 90_000_049, whose queens the choice of toy SD's shield weight was read on (run 7).
BASE_SEED = 91_000_033


def kept(pipe, family, case, reader, sampling: SamplingConfig, n: int) -> np.ndarray:
    """(negative prompts, images): 1 where an image still shows its prompt's unedited attribute."""
    images, _ = generate(pipe, family, [p.prompt for p in case.negatives], n, sampling, base_seed=BASE_SEED)
    reads = reader.read(images)
    return np.array([kept_hits(case, probe, reads[i * n:(i + 1) * n]) for i, probe in enumerate(case.negatives)],
                    dtype=float)


def paired_difference(a: np.ndarray, b: np.ndarray, samples: int, seed: int) -> tuple[float, float, float]:
    """mean(b) - mean(a) of two states' (prompts, images) grids, with the study's paired bootstrap
    interval (prompts, and images within them, resampled alike for both)."""
    rows, cols = draw_indices(a.shape, samples, seed)
    seeds = draw_seeds(1, samples, seed)
    ra, rb = (resample(x[None], rows, cols, seeds).mean(axis=(1, 2)) for x in (a, b))
    low, high = percentile_interval(rb - ra)
    return float(b.mean() - a.mean()), low, high


def main(n: int) -> None:
    torch.set_num_threads(2)
    config = stress_config()
    sampling = SamplingConfig(**config["sampling"])
    reader = AttributeReader.load(Path(READER))
    cases = load_cases(config["tasks"])
    out = {"images_per_negative": n, "base_seed": BASE_SEED, "edits": []}
    for entry in config["models"]:
        family, pipe = load_model_state(Path(entry["path"]), entry["family"], [], "cpu")
        for task in ("appearance", "role"):
            case = cases[task][0]
            row = {"base": kept(pipe, family, case, reader, sampling, n)}
            for editor in EDITORS:
                layer = STATES.format(model=entry["name"], editor=editor, task=task, case=case.name)
                originals = apply_layer(pipe, family, Path(layer))
                row[editor] = kept(pipe, family, case, reader, sampling, n)
                restore(pipe, originals)
            diff, low, high = paired_difference(row["uce"], row["uce-persist"], **config["evaluation"]["bootstrap"])
            summary = {"model": entry["name"], "task": task, "case": case.name,
                       **{s: float(row[s].mean()) for s in ("base", *EDITORS)},
                       "persist_minus_uce": diff, "ci": [low, high]}
            out["edits"].append(summary)
            print(f"{summary['model']} {task}: specificity base {summary['base']:.3f}, uce {summary['uce']:.3f}, "
                  f"uce-persist {summary['uce-persist']:.3f}; difference {diff:+.3f} [{low:+.3f}, {high:+.3f}] "
                  f"({len(case.negatives)} negative prompts x {n} images)", flush=True)
    Path("results/persist_specificity.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
