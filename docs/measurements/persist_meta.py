"""A simulated fine-tune inside the edit's optimisation: first-order meta-learning on toy SD's
appearance edit (docs/uce-persist.md, Limits). Not adopted: it is kept so the figures there
can be reproduced.

Run from the repository root after the toy world is built:
    python docs/measurements/persist_meta.py --lr 5e-3 --rounds 30 --steps 100
    python docs/measurements/persist_meta.py --lr 5e-3 --rounds 30 --steps 100 --wide --preserve-weight 3
Start from the shielded UCE edit (the made-up shield of the stress study's runs 2 to 4,
docs/measurements/README.md; margin 0). Each round fine-tunes a copy of the model on
uce-persist's simulated subject (every denoiser weight, `--steps` steps at the simulation's
learning rate), takes the gradient, with respect to the edited layers' weights,
of the denoising loss of the model's own "a blue circle" images captioned "a circle" plus that of
the preserved prompts' own images (weighted), once on the fine-tuned copy and once before it,
and steps Adam on their sum. Then it prints efficacy, caption accuracy (as in
persist_tradeoff.py), the ladder's simulated retention, and what a study-like LoRA run (300 steps
at 4e-3 on "a sks circle" drawn green, fine-tune seed 0, which no study uses) leaves.
"""
import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from editpersist.editors.base import EditDelta, apply_delta
from editpersist.editors.persist import shielded, simulated_subject
from editpersist.editors.uce import UCE
from editpersist.families.base import restore_weights, save_weights
from editpersist.finetuners.config import FinetuneConfig
from editpersist.finetuners.core import caption_conditioning, finetune
from editpersist.finetuners.subjects import ToySubject
from editpersist.latents import encode_latents
from editpersist.sampling import SamplingConfig, generate
# this folder is on sys.path as a script
from persist_tradeoff import (RUNS_2_TO_4, RUNS_2_TO_4_LR, RUNS_2_TO_4_SHIELD, RUNS_2_TO_4_SUBJECT,
                              caption_accuracy, stress_setup, widened)


def own_images_loss(pipe, family, prompts: list[str], captions: list[str], n: int, sampling: SamplingConfig,
                    seed: int, g: torch.Generator):
    """loss(index batch) of the model's own n images of each prompt, captioned with `captions`."""
    images, _ = generate(pipe, family, prompts, n, sampling, base_seed=seed)
    return family.training_loss(pipe, encode_latents(pipe.vae, images),
                                caption_conditioning(pipe, family, [c for c in captions for _ in range(n)], False), g)


def edited_layer_gradients(family, pipe, params, losses, weight: float, g: torch.Generator) -> list[torch.Tensor]:
    """Gradients of the edit's loss plus `weight` x the preserved prompts' loss, one batch of 8
    each, with respect to the edited layers' weights alone."""
    family.denoiser_of(pipe).requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    (edit, n_edit), (keep, n_keep) = losses
    loss = edit(torch.randint(0, n_edit, (8,), generator=g))
    loss = loss + weight * keep(torch.randint(0, n_keep, (8,), generator=g))
    grads = torch.autograd.grad(loss, params)
    for p in params:
        p.requires_grad_(False)
    return [x.detach() for x in grads]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=100, help="steps of each round's simulated fine-tune")
    parser.add_argument("--preserve-weight", type=float, default=1.0)
    parser.add_argument("--wide", action="store_true", help="also preserve the shield words before the other shapes")
    args = parser.parse_args()
    st = stress_setup(persist=RUNS_2_TO_4)
    family, pipe, editor, sampling = st.family, st.pipe, st.editor, st.sampling
    request = st.requests[0]
    subject = simulated_subject(pipe, family, [request], **RUNS_2_TO_4_SUBJECT, cfg=editor.cfg, sampling=sampling,
                                seed=editor.seed)
    shield = RUNS_2_TO_4_SHIELD
    weight = editor.cfg.shield_weight_for(family.name)
    guarded = widened(request, shield, weight) if args.wide else shielded(request, shield, weight)
    kept = list(guarded.preserve)
    g = torch.Generator().manual_seed(0)
    losses = ((own_images_loss(pipe, family, [request.target], [request.source], 16, sampling, 11, g), 16),
              (own_images_loss(pipe, family, kept, kept, 4, sampling, 12, g), 4 * len(kept)))
    apply_delta(pipe, UCE(editor.uce_cfg).edit(pipe, family, [shielded(request, shield, weight)]))
    layers = family.uce_modules(pipe)
    params = [m.weight for m in layers.values()]
    opt = torch.optim.Adam(params, lr=args.lr)
    for k in range(args.rounds):
        saved = save_weights(pipe, family)
        round_ft = replace(editor.cfg.finetune_config(RUNS_2_TO_4_LR), steps=args.steps, seed=1000 + k)
        finetune(pipe, family, subject, round_ft)
        after = edited_layer_gradients(family, pipe, params, losses, args.preserve_weight, g)
        restore_weights(pipe, saved)
        before = edited_layer_gradients(family, pipe, params, losses, args.preserve_weight, g)
        opt.zero_grad()
        for p, a, b in zip(params, after, before):
            p.grad = a + b
        opt.step()
    family.denoiser_of(pipe).eval()
    # The pipeline holds the learned weights already; as a delta they go through the ladder's own
    # simulation, which leaves the pipeline as it found it.
    learned = EditDelta({f"{k}.weight": m.weight.detach().clone() for k, m in layers.items()})
    efficacy, simulated = editor.simulate(pipe, family, learned, [request], subject, RUNS_2_TO_4_LR)
    out = {**vars(args), "efficacy": efficacy,
           "caption_accuracy": caption_accuracy(pipe, family, st.reader, st.quality, sampling),
           "simulated_after": simulated}
    green = ToySubject("sks-circle", "circle", "green")
    finetune(pipe, family, green.images(16, 0, 32), FinetuneConfig(method="lora", steps=300, lr=4e-3, batch=8, rank=4,
                                                                    alpha=4, seed=0))
    out["lora_seed0_after"] = editor.meter(pipe, request)
    print(json.dumps(out, indent=2))
    Path("results/persist_meta.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
