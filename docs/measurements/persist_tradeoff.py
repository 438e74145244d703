"""What keeps toy SD's appearance edit through uce-persist's simulated fine-tune, and what it
costs the rest of the model (README, "Edits that survive fine-tuning", Limits).

Run from the repository root after the toy world is built:
    python docs/measurements/persist_tradeoff.py
For each variant of the shielded UCE solve and each margin it prints and writes
(results/persist_tradeoff.json): efficacy on the edited model, caption accuracy (the reader's
share of 2 images of each of the study's 20 quality captions that show their caption's colour
and shape; the base scores 1.00) and the simulated retention that uce-persist's ladder reads. The
simulation is the stress study's (config/stress.yaml: its subject, seed and meter); no study
fine-tune is run. Variants:
  * study: the stress study's shield, the margin on every aligned row (what uce-persist does);
  * word_row: the margin on the word's own row only, the EOS and padding rows aimed at the
    destination itself;
  * wide_shield: the shield's made-up words also before the other shapes ("a qbe square"), so
    the preserve set covers "a <word> <shape>" prompts without naming an evaluation caption.
"""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

from editpersist.config import resolve_extends
from editpersist.editors.base import apply_delta, restore
from editpersist.editors.persist import PersistConfig, PersistentUCE, shielded, simulated_subject
from editpersist.editors.text_inputs import paired_rows
from editpersist.editors.uce import UCE, UCEConfig
from editpersist.evaluation.prompts import QualityConfig, quality_captions
from editpersist.metrics.reader_metrics import matches, text_attributes
from editpersist.sampling import SamplingConfig, generate, stream_seed
from editpersist.stages.edit import reader_shows_target, source_meter, target_share_of
from editpersist.states import load_model_state
from editpersist.tasks.toy import toy_cases
from editpersist.toy.reader import AttributeReader

# (variant, lam, margin): the rows of the README's Limits paragraph.
RUNS = [("study", 0.5, m) for m in (0.0, 1.0, 2.0)] + [("study", lam, 2.0) for lam in (2.0, 8.0)] \
    + [("word_row", 0.5, m) for m in (1.0, 2.0, 4.0)] + [("wide_shield", 0.5, m) for m in (1.0, 2.0, 4.0, 8.0)]


class WordRowMargin(UCE):
    """UCE whose margin moves only the first row of each aligned pair (the word's own state)."""

    def _pairs(self, enc, idx, requests, deltas):
        srcs, dsts = [], []
        for r in requests:
            a, b = paired_rows(enc, idx[r.source], enc, idx[r.target], self.cfg.token_mode)
            beyond = torch.zeros(len(a), 1)
            beyond[0] = self.cfg.margin
            srcs.append(a)
            dsts.append(b + beyond * (b - a))
        return torch.cat(srcs), torch.cat(dsts)


def caption_accuracy(pipe, family, reader, quality: QualityConfig, sampling) -> float:
    captions, n = quality_captions(quality), quality.images_per_caption
    images, _ = generate(pipe, family, captions, n, sampling, base_seed=123)
    wanted = [c for c in captions for _ in range(n)]
    return float(np.mean([matches(r, text_attributes(c)) for r, c in zip(reader.read(images), wanted)]))


def main() -> None:
    torch.set_num_threads(2)
    config = yaml.safe_load(open("config/stress.yaml"))
    resolve_extends(config)
    block = config["editors"]["uce-persist"]
    uce_block = {k: v for k, v in config["editors"]["uce"].items() if k != "debias"}
    persist = PersistConfig.from_block(block["persist"])
    sampling = SamplingConfig(**config["sampling"])
    seed = config["seed"]
    family, pipe = load_model_state(Path("resources/toy/models/toy-sd"), "sd", [], "cpu")
    reader = AttributeReader.load(Path("resources/toy/reader"))
    meter = source_meter(family, sampling, persist.meter_images, stream_seed(seed, "persist_meter"),
                         target_share_of(reader_shows_target(reader)))
    quality = QualityConfig(**config["evaluation"]["quality"])
    requests = list(toy_cases()["appearance"][0].requests)
    editor = PersistentUCE(UCEConfig(**uce_block), persist, meter, sampling, seed)
    subject = simulated_subject(pipe, family, requests, persist, sampling, seed)
    out = {"base_caption_accuracy": caption_accuracy(pipe, family, reader, quality, sampling), "runs": []}
    print(f"base: caption accuracy {out['base_caption_accuracy']:.2f}", flush=True)
    for variant, lam, margin in RUNS:
        guarded = [shielded(r, persist.shield) for r in requests]
        if variant == "wide_shield":
            guarded = [replace(r, preserve=r.preserve + tuple(f"a {w} {p.split()[-1]}" for p in r.preserve[:3]
                                                             for w in persist.shield)) for r in guarded]
        solver = WordRowMargin if variant == "word_row" else UCE
        delta = solver(UCEConfig(**{**uce_block, "lam": lam, "margin": margin})).edit(pipe, family, guarded)
        originals = apply_delta(pipe, delta)
        efficacy, accuracy = meter(pipe, requests[0]), caption_accuracy(pipe, family, reader, quality, sampling)
        restore(pipe, originals)
        edited, tuned = editor.simulate(pipe, family, delta, requests, subject)
        run = {"variant": variant, "lam": lam, "margin": margin, "efficacy": efficacy, "caption_accuracy": accuracy,
               "simulated_edited": edited, "simulated_after": tuned}
        out["runs"].append(run)
        print(f"{variant} lam {lam} margin {margin}: efficacy {efficacy:.2f}, caption accuracy {accuracy:.2f}, "
              f"simulated {edited:.2f} -> {tuned:.2f}", flush=True)
    Path("results/persist_tradeoff.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
