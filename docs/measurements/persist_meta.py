"""A simulated fine-tune inside the edit's optimisation: first-order meta-learning on toy SD's
appearance edit (README, "Edits that survive fine-tuning", Limits). Not adopted: it is kept so
the README's figures can be reproduced.

Run from the repository root after the toy world is built:
    python docs/measurements/persist_meta.py --lr 5e-3 --rounds 30 --steps 100
    python docs/measurements/persist_meta.py --lr 5e-3 --rounds 30 --steps 100 --wide --preserve-weight 3
Start from the shielded UCE edit (the stress study's settings, margin 0). Each round fine-tunes a
copy of the model on uce-persist's simulated subject (every denoiser weight, `--steps` steps at
the simulation's learning rate), takes the gradient, with respect to the edited layers' weights,
of the denoising loss of the model's own "a blue circle" images captioned "a circle" plus that of
the preserved prompts' own images (weighted), once on the fine-tuned copy and once before it,
and steps Adam on their sum. Then it prints efficacy, caption accuracy (as in
persist_tradeoff.py), the ladder's simulated retention, and what a study-like LoRA run (300 steps
at 4e-3 on "a sks circle" drawn green, fine-tune seed 0, which no study uses) leaves.
"""
import argparse
import json
from pathlib import Path

import torch
import yaml

from editpersist.config import resolve_extends
from editpersist.editors.base import EditDelta, apply_delta
from editpersist.editors.persist import PersistConfig, shielded, simulated_subject
from editpersist.editors.uce import UCE, UCEConfig
from editpersist.evaluation.prompts import QualityConfig
from editpersist.families.base import restore_weights, save_weights
from editpersist.finetuners.config import FinetuneConfig
from editpersist.finetuners.core import caption_conditioning, finetune
from editpersist.finetuners.subjects import ToySubject
from editpersist.latents import encode_latents
from editpersist.sampling import SamplingConfig, generate, stream_seed
from editpersist.stages.edit import reader_shows_target, source_meter, target_share_of
from editpersist.states import load_model_state
from editpersist.tasks.toy import toy_cases
from editpersist.toy.reader import AttributeReader
from persist_tradeoff import caption_accuracy  # this folder is on sys.path when run as a script

MODEL = Path("resources/toy/models/toy-sd")


def own_images_loss(pipe, family, prompts: list[str], captions: list[str], n: int, sampling: SamplingConfig,
                    seed: int, g: torch.Generator):
    """loss(index batch) of the model's own n images of each prompt, captioned with `captions`."""
    images, _ = generate(pipe, family, prompts, n, sampling, base_seed=seed)
    return family.training_loss(pipe, encode_latents(pipe.vae, images),
                                caption_conditioning(pipe, family, [c for c in captions for _ in range(n)], False), g)


def edited_layer_gradients(family, pipe, params, loss_of, n_edit: int, n_keep: int, weight: float,
                           g: torch.Generator) -> list[torch.Tensor]:
    family.denoiser_of(pipe).requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    loss = loss_of[0](torch.randint(0, n_edit, (8,), generator=g)) \
        + weight * loss_of[1](torch.randint(0, n_keep, (8,), generator=g))
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
    torch.set_num_threads(2)
    config = yaml.safe_load(open("config/stress.yaml"))
    resolve_extends(config)
    uce_block = {k: v for k, v in config["editors"]["uce"].items() if k != "debias"}
    persist = PersistConfig.from_block(config["editors"]["uce-persist"]["persist"])
    sampling = SamplingConfig(**config["sampling"])
    seed = config["seed"]
    family, pipe = load_model_state(MODEL, "sd", [], "cpu")
    reader = AttributeReader.load(Path("resources/toy/reader"))
    meter = source_meter(family, sampling, persist.meter_images, stream_seed(seed, "persist_meter"),
                         target_share_of(reader_shows_target(reader)))
    request = toy_cases()["appearance"][0].requests[0]
    subject = simulated_subject(pipe, family, [request], persist, sampling, seed)
    kept = list(request.preserve) + [f"a {w} circle" for w in persist.shield]
    if args.wide:
        kept += [f"a {w} {p.split()[-1]}" for p in request.preserve for w in persist.shield]
    g = torch.Generator().manual_seed(0)
    loss_of = (own_images_loss(pipe, family, [request.target], [request.source], 16, sampling, 11, g),
               own_images_loss(pipe, family, kept, kept, 4, sampling, 12, g))
    apply_delta(pipe, UCE(UCEConfig(**uce_block)).edit(pipe, family, [shielded(request, persist.shield)]))
    layers = {k: m for group in family.uce_groups(pipe).values() for k, m in group.items()}
    params = [m.weight for m in layers.values()]
    opt = torch.optim.Adam(params, lr=args.lr)
    for k in range(args.rounds):
        saved = save_weights(pipe, family)
        finetune(pipe, family, subject, FinetuneConfig(method="full", steps=args.steps, lr=persist.lr, batch=8,
                                                       seed=1000 + k))
        after = edited_layer_gradients(family, pipe, params, loss_of, 16, 4 * len(kept), args.preserve_weight, g)
        restore_weights(pipe, saved)
        before = edited_layer_gradients(family, pipe, params, loss_of, 16, 4 * len(kept), args.preserve_weight, g)
        opt.zero_grad()
        for p, a, b in zip(params, after, before):
            p.grad = a + b
        opt.step()
    family.denoiser_of(pipe).eval()
    tensors = {f"{k}.weight": m.weight.detach().clone() for k, m in layers.items()}
    out = {**vars(args), "efficacy": meter(pipe, request),
           "caption_accuracy": caption_accuracy(pipe, family, reader, QualityConfig(**config["evaluation"]["quality"]),
                                                sampling)}
    saved = save_weights(pipe, family)
    finetune(pipe, family, subject, persist.finetune_config())
    out["simulated_after"] = meter(pipe, request)
    restore_weights(pipe, saved)
    family, pipe = load_model_state(MODEL, "sd", [], "cpu")
    apply_delta(pipe, EditDelta(tensors))
    green = ToySubject("sks-circle", "circle", "green")
    finetune(pipe, family, green.images(16, 0, 32), FinetuneConfig(method="lora", steps=300, lr=4e-3, batch=8, rank=4,
                                                                    alpha=4, seed=0))
    out["lora_seed0_after"] = meter(pipe, request)
    print(json.dumps(out, indent=2))
    Path("results/persist_meta.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
