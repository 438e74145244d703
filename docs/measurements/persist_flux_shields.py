"""Why uce-persist does not keep toy FLUX's appearance edit: no shield that leaves out "sks"
keeps "a sks circle" red while "a circle" turns blue (docs/uce-persist.md, Limits).

Run from the repository root after the toy world is built:
    python docs/measurements/persist_flux_shields.py
On toy FLUX, with the stress study's appearance edit (circle -> blue, uce-persist's UCE settings
at margin 0.5), each shield below is solved at several total weights (`shielded`; the study
weighs its shield as 6 preserved prompts) and read on 32 images each of "a circle" and "a sks
circle" (the editor's own meter). The shields: none; the study's made-up words; the toy T5's
never-trained one-token words (docs/measurements/persist_rare_shield.py); the single letters;
all of them together; and, as a diagnostic the product may never use, "sks" itself (the
study's word). For no shield, the study's and "sks", the edited model is then fine-tuned as
the study's LoRA cell does (its photos of "a sks circle" drawn green and its LoRA settings, read
from config/stress.yaml) on fine-tune seed 4, which the study never uses, and "a circle" is read
again. About 6 min on 2 cores. Writes
results/persist_flux_shields.json.
"""
import json
from dataclasses import replace
from pathlib import Path

from editpersist.editors.base import apply_delta, restore
from editpersist.editors.persist import shielded, token_tokenizers, with_identifier
from editpersist.editors.uce import UCE
from editpersist.finetuners.core import finetune
from editpersist.states import load_model_state
from persist_rare_shield import never_trained_words
from persist_tradeoff import RUNS_2_TO_4_SHIELD, stress_setup, study_finetune, study_subject  # folder on sys.path

MARGIN = 0.5
WEIGHTS = (6.0, 3.0, 1.5)
FINETUNED = ("none", "made-up (study)", "sks (diagnostic)")


def main() -> None:
    st = stress_setup("toy-flux")
    pipe, family, editor, request = st.pipe, st.family, st.editor, st.requests[0]
    sks = with_identifier(request.source, "sks")
    entry = next(m for m in st.config["models"] if m["name"] == "toy-flux")
    lora = study_finetune(st.config, "lora", seed=4)
    # The study's photos of its subject: its data seed and size, whatever the fine-tune's seed.
    photos = study_subject(st.config, "sks-circle").images(st.config["finetune_data"]["n_images"], st.config["seed"],
                                                           st.sampling.height)

    def blue(prompt: str) -> float:
        return editor.meter(pipe, replace(request, source=prompt))

    rare = tuple(never_trained_words(token_tokenizers(pipe, family)))
    letters = tuple("bcdefghijklmnopqrstuvwxy")
    made_up = RUNS_2_TO_4_SHIELD  # toy FLUX's shield in every stress run before the drawn one
    shields = {"none": (), "made-up (study)": made_up, "never-trained": rare, "letters": letters,
               "all of them": tuple(sorted(set(rare + letters + made_up))), "sks (diagnostic)": ("sks",)}
    out = {"margin": MARGIN, "base": {"a circle": blue(request.source), "a sks circle": blue(sks)}, "shields": []}
    print(f"base: {out['base']}", flush=True)
    for label, words in shields.items():
        for weight in (WEIGHTS if words else (0.0,)):
            guarded = shielded(request, words, weight) if words else request
            delta = UCE(replace(editor.uce_cfg, margin=MARGIN)).edit(pipe, family, [guarded])
            originals = apply_delta(pipe, delta)
            row = {"shield": label, "words": len(words), "weight": weight, "a circle": blue(request.source),
                   "a sks circle": blue(sks)}
            restore(pipe, originals)
            if label in FINETUNED and weight in (0.0, WEIGHTS[0]):
                # A fresh copy: the LoRA run leaves its adapters in the denoiser.
                _, tuned = load_model_state(Path(entry["path"]), family.name, [], "cpu")
                apply_delta(tuned, delta)
                finetune(tuned, family, photos, lora)
                row["a circle after LoRA seed 4"] = editor.meter(tuned, request)
            out["shields"].append(row)
            print(json.dumps(row), flush=True)
    Path("results/persist_flux_shields.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
