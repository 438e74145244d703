"""What keeps toy SD's appearance edit through uce-persist's simulated fine-tune, and what it
costs the rest of the model (docs/uce-persist.md, Limits).

Run from the repository root after the toy world is built:
    python docs/measurements/persist_tradeoff.py
For each variant of the shielded UCE solve and each margin it prints and writes
(results/persist_tradeoff.json): efficacy on the edited model, caption accuracy (the reader's
share of 2 images of each of the study's 20 quality captions that show their caption's colour
and shape; the base scores 1.00) and the simulated retention that uce-persist's ladder reads. The
simulation is the stress study's (config/stress.yaml: its subject, seed and meter, with the shield,
word and learning rate of runs 2 to 4, RUNS_2_TO_4); no study fine-tune is run. Variants:
  * study: the stress study's shield, the margin on every aligned row (what uce-persist does);
  * word_row: the margin on the word's own row only, the EOS and padding rows aimed at the
    destination itself;
  * wide_shield: the shield's made-up words also before the other shapes ("a qbe square"), so
    the preserve set covers "a <word> <shape>" prompts without naming an evaluation caption.
"""
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from editpersist.config import resolve_extends
from editpersist.editors import editor_block
from editpersist.editors.base import apply_delta, restore
from editpersist.editors.persist import PersistentUCE, shielded, simulated_subject
from editpersist.editors.text_inputs import paired_rows
from editpersist.editors.uce import UCE
from editpersist.evaluation.prompts import QualityConfig, quality_captions
from editpersist.finetuners.config import FinetuneConfig
from editpersist.finetuners.subjects import make_subject
from editpersist.metrics.reader_metrics import matches, text_attributes
from editpersist.sampling import SamplingConfig, generate
from editpersist.stages.edit import case_editor
from editpersist.states import load_model_state
from editpersist.tasks import load_cases
from editpersist.tasks.requests import EditRequest
from editpersist.toy.reader import AttributeReader

READER = "resources/toy/reader"

# (variant, lam, margin): the rows behind the figures of docs/uce-persist.md, Limits.
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


@dataclass
class StressSetup:
    """A toy model (toy SD unless named) with the stress study's appearance edit and its
    uce-persist editor, built by the edit stage's own `case_editor` from config/stress.yaml, so
    every setting is the study's."""

    family: object
    pipe: object
    editor: PersistentUCE
    requests: list[EditRequest]
    sampling: SamplingConfig
    quality: QualityConfig
    reader: AttributeReader  # for caption accuracy (the editor's meter loads its own copy)
    config: dict  # config/stress.yaml, resolved


def stress_config() -> dict:
    config = yaml.safe_load(open("config/stress.yaml"))
    resolve_extends(config)
    return config


def study_finetune(config: dict, finetuner: str, seed: int) -> FinetuneConfig:
    """A fine-tune of the study's, as its workflow builds it, on a seed of the caller's."""
    block = {k: v for k, v in config["finetuners"][finetuner].items() if k != "seeds"}
    return FinetuneConfig(method=finetuner, **{**block, "seed": seed})


def study_subject(config: dict, name: str):
    spec = dict(next(s for s in config["finetune_data"]["subjects"] if s["name"] == name))
    return make_subject(dict(spec, cls=spec.pop("class")))


# The persist settings of the stress study's runs 2 to 4 (docs/measurements/README.md), which this
# script's and persist_meta.py's figures measure (docs/uce-persist.md, Limits): made-up shield
# words at weight 1 each, the simulation's word "zwx" at 2e-4 on the model's own yellow images.
# The current settings (config/stress.yaml) draw the shield and the simulation's word and colour
# from the tokenizer (editors/persist.py, draw_words) and weigh the shield per family.
RUNS_2_TO_4 = {"shield_weight": 6.0, "lrs": [2.0e-4]}
RUNS_2_TO_4_LR = 2.0e-4
RUNS_2_TO_4_SUBJECT = {"identifier": "zwx", "look": "yellow"}
RUNS_2_TO_4_SHIELD = ("qbe", "vok", "hta", "lum", "dor", "jix")


def stress_setup(model: str = "toy-sd", persist: dict | None = None) -> StressSetup:
    """`persist`: settings that replace the config's uce-persist ones (e.g. RUNS_2_TO_4)."""
    torch.set_num_threads(2)
    config = stress_config()
    sampling = SamplingConfig(**config["sampling"])
    entry = next(m for m in config["models"] if m["name"] == model)
    family, pipe = load_model_state(Path(entry["path"]), entry["family"], [], "cpu")
    case = load_cases(config["tasks"])["appearance"][0]
    block = editor_block(config["editors"], "uce-persist")
    block = {**block, "persist": {**block["persist"], **(persist or {})}}
    editor = case_editor("uce-persist", block, family, case, None, sampling, config["seed"], "cpu", None, READER)
    return StressSetup(family, pipe, editor, list(case.requests), sampling,
                       QualityConfig(**config["evaluation"]["quality"]), AttributeReader.load(Path(READER)), config)


def widened(request: EditRequest, words: tuple[str, ...], weight: float) -> EditRequest:
    """The shielded request that also preserves "a <word> <shape>" for every preserved shape
    (weight 1 each, as in runs 2 to 4)."""
    others = tuple(f"a {w} {p.split()[-1]}" for p in request.preserve for w in words)
    guarded = shielded(request, words, weight)
    return replace(guarded, preserve=guarded.preserve + others,
                   preserve_weights=tuple(w for _, w in guarded.weighted_preserve()) + (1.0,) * len(others))


def main() -> None:
    st = stress_setup(persist=RUNS_2_TO_4)
    family, pipe, editor, requests, sampling = st.family, st.pipe, st.editor, st.requests, st.sampling
    shield = RUNS_2_TO_4_SHIELD
    subject = simulated_subject(pipe, family, requests, **RUNS_2_TO_4_SUBJECT, cfg=editor.cfg, sampling=sampling,
                                seed=editor.seed)
    out = {"base_caption_accuracy": caption_accuracy(pipe, family, st.reader, st.quality, sampling), "runs": []}
    print(f"base: caption accuracy {out['base_caption_accuracy']:.2f}", flush=True)
    for variant, lam, margin in RUNS:
        weight = editor.cfg.shield_weight_for(family.name)
        guarded = [widened(r, shield, weight) if variant == "wide_shield" else shielded(r, shield, weight)
                   for r in requests]
        solver = WordRowMargin if variant == "word_row" else UCE
        delta = solver(replace(editor.uce_cfg, lam=lam, margin=margin)).edit(pipe, family, guarded)
        originals = apply_delta(pipe, delta)
        efficacy = editor.meter(pipe, requests[0])
        accuracy = caption_accuracy(pipe, family, st.reader, st.quality, sampling)
        restore(pipe, originals)
        edited, tuned = editor.simulate(pipe, family, delta, requests, subject, RUNS_2_TO_4_LR)
        run = {"variant": variant, "lam": lam, "margin": margin, "efficacy": efficacy, "caption_accuracy": accuracy,
               "simulated_edited": edited, "simulated_after": tuned}
        out["runs"].append(run)
        print(f"{variant} lam {lam} margin {margin}: efficacy {efficacy:.2f}, caption accuracy {accuracy:.2f}, "
              f"simulated {edited:.2f} -> {tuned:.2f}", flush=True)
    Path("results/persist_tradeoff.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
