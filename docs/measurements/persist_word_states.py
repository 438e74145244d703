"""How each toy model's text encoder reads the concept under a word: the cosine between the state
UCE reads at the noun of "a <word> circle" and at the noun of "a circle", per token-state input
the edit reads. Where it is 1.00 the encoder reads the word as nothing, so a shield of such words
holds the concept itself, and a fine-tune under such a word retrains the concept.

    python docs/measurements/persist_word_states.py

The words: the one-letter words the method draws its shield and simulation word from (those the
tokenizers hold as one token), the stress study's identifier "sks" and the held-out study's
"yak"; "a blue circle" and "a square" for scale. Reported in docs/uce-persist.md ("Limits").
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

from editpersist.editors.persist import single_token_words, token_tokenizers
from editpersist.editors.text_inputs import encode_for_edit, key_rows
from editpersist.io import atomic_path
from editpersist.states import load_model_state

FAMILY = {"toy-sd": "sd", "toy-flux": "flux"}
CONCEPT = "circle"
OTHERS = ("sks", "yak")


def noun_cosines(pipe, family, words: list[str]) -> dict[str, dict[str, float]]:
    """Per token-state input: the cosine of each prompt's noun state with the bare concept's."""
    prompts = [f"a {CONCEPT}"] + [f"a {w} {CONCEPT}" for w in words] + [f"a blue {CONCEPT}", "a square"]
    names = list(words) + [f"blue {CONCEPT}", "square"]
    out = {}
    for group, enc in encode_for_edit(pipe, family, prompts).items():
        if enc.mask is None:  # a pooled vector has no noun state
            continue
        rows = [key_rows(enc, i, "last")[0] for i in range(len(prompts))]
        out[group] = {n: round(float(torch.cosine_similarity(rows[0], r, dim=0)), 3) for n, r in zip(names, rows[1:])}
    return out


def main() -> None:
    result = {}
    for model, family_name in FAMILY.items():
        family, pipe = load_model_state(Path(f"resources/toy/models/{model}"), family_name, [], "cpu")
        letters = single_token_words(token_tokenizers(pipe, family), tuple(string.ascii_lowercase))
        result[model] = noun_cosines(pipe, family, [w for w in letters if w != "a"] + list(OTHERS))
        for group, cos in result[model].items():
            print(f"{model} {group}: " + ", ".join(f"{w} {c:.3f}" for w, c in cos.items()))
    out = Path("results/persist_word_states.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
