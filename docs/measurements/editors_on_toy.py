"""TIME or ReFACT (their official recipes, the toy config's settings) on the built toy models,
outside the default grid: efficacy and specificity read by the toy reader, 64 source images
and 16 per negative prompt, the evaluation's seeds (as the toy study measures them).

Run from the repository root once `make run` has built the toy world:
    python docs/measurements/editors_on_toy.py refact toy-sd:sd toy-flux:flux
    python docs/measurements/editors_on_toy.py time toy-sd:sd toy-flux:flux
ReFACT is run with the toy config's block; TIME with and without the official augmentations.
Prints one line per edit and writes results/probe_<editor>.json.
"""
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from editpersist.editors.refact import refact_config, refact_corpus, refact_stat_sites
from editpersist.editors.base import apply_delta
from editpersist.editors.refact import ReFACT, compute_and_cache_stats
from editpersist.editors.time import TIME, TIMEConfig
from editpersist.families import get_family
from editpersist.sampling import SamplingConfig, generate
from editpersist.metrics.reader_metrics import edited_hits, kept_hits
from editpersist.tasks.toy import toy_cases
from editpersist.toy.reader import AttributeReader

SAMPLING = SamplingConfig(steps=20, guidance=5.0)
REFACT_CFG = yaml.safe_load(open("config/config.yaml"))["editors"]["refact"]


def measure(pipe, family, case, reader) -> dict:
    images, _ = generate(pipe, family, [case.source.prompt], 64, SAMPLING, base_seed=0)
    kept = []
    for negative in case.negatives:
        neg_images, _ = generate(pipe, family, [negative.prompt], 16, SAMPLING, base_seed=0)
        kept += kept_hits(case, negative, reader.read(neg_images))
    return {"efficacy": float(np.mean(edited_hits(case, case.source, reader.read(images)))),
            "specificity": float(np.mean(kept))}


def variants(editor: str, family, task: str, stats: Path):
    """(label, editor) pairs to run."""
    if editor == "time":
        return [(f"augment={a}", TIME(TIMEConfig(augment=a))) for a in (False, True)]
    return [("toy config", ReFACT(refact_config(REFACT_CFG, family, task), stats))]


def main(editor: str, models: list[str]) -> None:
    torch.set_num_threads(2)
    reader, cases, out = AttributeReader.load("resources/toy/reader"), toy_cases(), {}
    for model, family_name in (m.split(":") for m in models):
        family = get_family(family_name)
        with tempfile.TemporaryDirectory() as stats:
            if editor == "refact":
                pipe = family.load(f"resources/toy/models/{model}")
                compute_and_cache_stats(pipe, refact_stat_sites(REFACT_CFG, family), refact_corpus(REFACT_CFG, 0),
                                        Path(stats))
            for task in ("appearance", "role"):
                case = cases[task][0]
                for label, edit in variants(editor, family, task, Path(stats)):
                    pipe = family.load(f"resources/toy/models/{model}")
                    row = {"base": measure(pipe, family, case, reader)}
                    delta = edit.edit(pipe, family, list(case.requests))
                    apply_delta(pipe, delta)
                    row["edited"] = measure(pipe, family, case, reader)
                    row["optimisation"] = delta.sidecar.get("optimisation", [])
                    out[f"{model}/{task}/{label}"] = row
                    print(model, task, label, row, flush=True)
    Path("results").mkdir(exist_ok=True)
    Path(f"results/probe_{editor}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
