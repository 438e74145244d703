"""Can a shield of never-trained tokens hold a fine-tune's identifier out of an appearance edit
without naming it? (docs/uce-persist.md, "The method" and Limits.)

Run from the repository root after the toy world is built:
    python docs/measurements/persist_rare_shield.py [toy-flux] [toy-sd]
The toy tokenizers hold one-token words that no toy caption uses (toy FLUX's T5: "▁k", "▁dr",
...; toy SD's CLIP: single letters such as "k</w>"): their embedding rows were never trained,
exactly like the study's "sks". They are the toy world's rare tokens, the kind DreamBooth draws
its identifiers from. This script splits them into four folds, solves the stress study's
appearance edit (circle -> blue, uce-persist's UCE settings at the margin its simulation chose
in the stress study, read from the edit's sidecar) with the other three folds as the shield
(weighed as the study weighs its shield), and reads 32 images each of "a circle", "a sks
circle" (never shielded) and "a <w> circle" for the held-out fold's words w. A shield that
generalises leaves the held-out words and "sks" red while "a circle" turns blue. The first row
is the made-up words that shielded both models in the stress study's runs 2 to 4, weighed as
then. No fine-tune is run (about 1 min on 2 cores). Writes results/persist_rare_shield.json.
"""
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from editpersist.editors.base import apply_delta, restore
from editpersist.editors.persist import shielded, token_tokenizers, with_identifier
from editpersist.editors.uce import UCE
from editpersist.toy.world import RARE_TOKENS, WorldSpec
from persist_tradeoff import RUNS_2_TO_4, RUNS_2_TO_4_SHIELD, stress_setup  # this folder is on sys.path as a script

SIDECAR = "results/stress/states/{}/edit/uce-persist/appearance/circle-to-blue.json"
FOLDS = 4


def never_trained_words(tokenizers) -> list[str]:
    """Words that each tokenizer encodes as one token no toy caption uses (the study's
    identifiers excluded: they are what the shield must reach without naming)."""
    words = None
    for tok in tokenizers:
        trained = {p for w in WorldSpec().words() if w not in RARE_TOKENS for p in tok.tokenize(w)}
        spelled = {p.removeprefix("▁").removesuffix("</w>") for p in tok.get_vocab()}
        # Lower case only: toy SD's CLIP lowercases every prompt, so "K" would be "k" again.
        single = {w for w in spelled if w.isalpha() and w.islower() and w not in RARE_TOKENS
                  and len(pieces := tok.tokenize(w)) == 1 and pieces[0] not in trained}
        words = single if words is None else words & single
    return sorted(words or ())


def measure(model: str) -> dict:
    st = stress_setup(model)
    margin = json.loads(Path(SIDECAR.format(model)).read_text())["margin"]  # the study's choice
    pipe, family, editor, request = st.pipe, st.family, st.editor, st.requests[0]

    def blue(prompt: str) -> float:
        return editor.meter(pipe, replace(request, source=prompt))

    rare = never_trained_words(token_tokenizers(pipe, family))
    order = list(np.random.default_rng(0).permutation(rare))
    folds = [sorted(order[k::FOLDS]) for k in range(FOLDS)] if rare else []
    weight = editor.cfg.shield_weight_for(family.name)  # the study's
    shields = [("made-up (runs 2 to 4)", RUNS_2_TO_4_SHIELD, RUNS_2_TO_4["shield_weight"], [])]
    shields += [(f"rare, fold {k} held out", tuple(w for w in rare if w not in fold), weight, fold)
                for k, fold in enumerate(folds)]
    out = {"model": model, "margin": margin, "never_trained_words": rare,
           "base": {"a circle": blue(request.source), "a sks circle": blue(with_identifier(request.source, "sks"))},
           "shields": []}
    print(f"{model}: base {out['base']}; never-trained words {rare}", flush=True)
    for label, shield, weight, held_out in shields:
        guarded = shielded(request, shield, weight)
        delta = UCE(replace(editor.uce_cfg, margin=margin)).edit(pipe, family, [guarded])
        originals = apply_delta(pipe, delta)
        row = {"shield": label, "words": list(shield), "weight": weight, "a circle": blue(request.source),
               "a sks circle": blue(with_identifier(request.source, "sks")),
               "held_out": {w: blue(with_identifier(request.source, w)) for w in held_out}}
        restore(pipe, originals)
        out["shields"].append(row)
        held = np.mean(list(row["held_out"].values())) if held_out else float("nan")
        print(f"  margin {margin}, {label} ({len(shield)} words): a circle {row['a circle']:.2f}, a sks circle "
              f"{row['a sks circle']:.2f}, held-out words {held:.2f}",
              flush=True)
    return out


def main() -> None:
    models = sys.argv[1:] or ["toy-flux", "toy-sd"]
    Path("results/persist_rare_shield.json").write_text(json.dumps([measure(m) for m in models], indent=2) + "\n")


if __name__ == "__main__":
    main()
