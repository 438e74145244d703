"""Prototype for [toy-world-v2]: can the toy text encoders be taught to carry a phrase through
its noun, so that a subject-state transplant (the subject_binding probe) changes what is drawn?

Run from the repository root on a built toy world (`make run` builds it):
    python docs/measurements/subject_routing.py --family sd --steps 600
    python docs/measurements/subject_routing.py --family flux --steps 600

It re-trains one text encoder of a toy pipeline (toy SD: the CLIP tower; toy FLUX: the T5) with
two losses and leaves the denoiser as built:
- routing: for pairs (a bare noun, the noun with a colour or another noun: "a circle" / "a blue
  circle", "a king" / "a triangle"), the destination's subject state after a random layer is
  transplanted into the source, and the source's final states from the subject on (subject,
  EOS, padding) must match the destination's;
- preservation: on the training captions and "", every final state stays what the frozen
  original gives, so the denoiser still reads what it was trained on.
Then it measures subject_binding (the probe of results/toy/quality.json) and prompt fidelity.
For FLUX it also asks where the denoiser reads the colour: T5 states and pooled CLIP vector of
"a circle" and "a blue circle" swapped one at a time; with --clip it routes FLUX's CLIP tower
too and transplants at a CLIP layer as well as a T5 layer (ReFACT's `flux_clip` site); with
--drop-pooled P it first pre-trains a new toy FLUX (T5 and transformer, the toy config's steps)
whose pooled vector is replaced by the empty prompt's with probability P, so that the
transformer must read the prompt from T5 (the built world's recipe with P = 0).
Writes results/subject_routing_<family>[_clip][_dropP].json.
"""
import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from editpersist.editors.refact import subject_last_index, tokenize
from editpersist.evaluation.subject_probe import _hidden, layer_count, noun_phrase, transplant_all, transplant_sites
from editpersist.evaluation.toy_quality import edit_share, prompt_fidelity, subject_binding
from editpersist.families import get_family
from editpersist.sampling import SamplingConfig
from editpersist.tasks.toy import toy_cases
from editpersist.toy.reader import AttributeReader
from editpersist.toy.world import COLORS, SHAPES, TEMPLATES, WorldSpec, describe, sample_captions

MODELS = {"sd": "resources/toy/models/toy-sd", "flux": "resources/toy/models/toy-flux"}


def site_encoder(pipe, site):
    """(tokenizer, encoder, its blocks) of a ReFACT site: the encoder whose states the probe transplants."""
    encoder = getattr(pipe, site.component)
    return getattr(pipe, site.tokenizer), encoder, encoder.get_submodule(site.block.rsplit(".", 1)[0])


def phrase_pair(spec: WorldSpec, rng: np.random.Generator) -> tuple[str, str]:
    """(source, destination): a bare noun and the same noun with a colour, or two nouns."""
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    colors, nouns = list(COLORS), list(SHAPES) + list(spec.roles)
    if rng.random() < 0.5:
        shape, color = SHAPES[rng.integers(len(SHAPES))], colors[rng.integers(len(colors))]
        return describe(None, shape, template), describe(None if (color, shape) in spec.held_out_pairs else color,
                                                         shape, template)
    a, b = nouns[rng.integers(len(nouns))], nouns[rng.integers(len(nouns))]
    color = colors[rng.integers(len(colors))] if rng.random() < 0.5 else None
    return describe(None, a, template), describe(None if (color, b) in spec.held_out_pairs else color, b, template)


def subject_positions(tok, prompts: list[str]) -> torch.Tensor:
    return torch.tensor([subject_last_index(tok, p, noun_phrase(p)) for p in prompts])


def routing_gap(student, teacher, tok, blocks, sources: list[str], destinations: list[str], layer: int):
    """Mean squared gap, from the subject on, between the sources with the destinations' subject
    states transplanted after `layer` (student) and the destinations (teacher)."""
    src_pos, dst_pos = subject_positions(tok, sources), subject_positions(tok, destinations)
    rows = torch.arange(len(sources))
    seen = {}
    handle = blocks[layer].register_forward_hook(lambda m, a, o: seen.__setitem__("h", _hidden(o).detach()))
    with torch.no_grad():
        student(tokenize(tok, destinations).input_ids)
        target = teacher(tokenize(tok, destinations).input_ids).last_hidden_state
    handle.remove()
    states = seen["h"][rows, dst_pos]

    def transplant(m, a, o):
        hidden = _hidden(o).clone()
        hidden[rows, src_pos] = states
        return (hidden, *o[1:]) if isinstance(o, tuple) else hidden

    handle = blocks[layer].register_forward_hook(transplant)
    try:
        got = student(tokenize(tok, sources).input_ids).last_hidden_state
    finally:
        handle.remove()
    length = got.shape[1]
    gaps = []
    for i, (s, d) in enumerate(zip(src_pos.tolist(), dst_pos.tolist())):
        k = length - max(s, d)
        gaps.append(((got[i, s:s + k] - target[i, d:d + k]) ** 2).mean())
    return torch.stack(gaps).mean()


def route(student, tok, blocks, spec: WorldSpec, steps: int, weight: float, batch: int, lr: float, seed: int):
    teacher = copy.deepcopy(student).eval()
    rng = np.random.default_rng(seed)
    captions = [s.caption for s in sample_captions(spec, 4000, rng)] + [""]
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    student.train()
    log = []
    for step in range(steps):
        prompts = [captions[i] for i in rng.integers(len(captions), size=batch)] + [""]
        ids = tokenize(tok, prompts).input_ids
        with torch.no_grad():
            kept = teacher(ids).last_hidden_state
        keep = ((student(ids).last_hidden_state - kept) ** 2).mean()
        pairs = [phrase_pair(spec, rng) for _ in range(batch)]
        # After the last block nothing is recomputed, so a transplant there cannot reach EOS.
        layer = int(rng.integers(len(blocks) - 1))
        gap = routing_gap(student, teacher, tok, blocks, [a for a, _ in pairs], [b for _, b in pairs], layer)
        loss = keep + weight * gap
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            log.append({"step": step, "preservation": float(keep.detach()), "routing": float(gap.detach())})
            print(log[-1], flush=True)
    student.eval()
    return teacher, log


def gaps_per_layer(student, teacher, tok, blocks, spec: WorldSpec) -> list[float]:
    rng = np.random.default_rng(123)
    pairs = [phrase_pair(spec, rng) for _ in range(256)]
    with torch.no_grad():
        return [float(routing_gap(student, teacher, tok, blocks, [a for a, _ in pairs], [b for _, b in pairs], layer))
                for layer in range(len(blocks))]


@torch.no_grad()
def flux_colour_source(pipe, reader, n: int = 16) -> dict:
    """Share of blue images with T5 states and pooled vector taken from "a circle" (red) or "a blue circle"."""
    def encode(prompt):
        encoded = get_family("flux").encode_prompts(pipe, [prompt])
        return encoded["prompt_embeds"], encoded["pooled"]

    def blue(embeds, pooled):
        images = pipe(prompt_embeds=embeds.repeat(n, 1, 1), pooled_prompt_embeds=pooled.repeat(n, 1),
                      num_inference_steps=20, guidance_scale=0.0, generator=torch.Generator().manual_seed(0),
                      output_type="np", height=32, width=32).images
        return float(np.mean([r["color"] == "blue" for r in reader.read((images * 255).round().astype(np.uint8))]))

    (src_t5, src_pooled), (dst_t5, dst_pooled) = encode("a circle"), encode("a blue circle")
    return {"source": blue(src_t5, src_pooled), "destination": blue(dst_t5, dst_pooled),
            "t5_destination_pooled_source": blue(dst_t5, src_pooled),
            "t5_source_pooled_destination": blue(src_t5, dst_pooled), "n_images": n}


def pretrain_flux_reading_t5(pipe, p_drop: float, seed: int = 0) -> None:
    """Replace the pipeline's T5 and transformer by ones pre-trained as the toy world builds them,
    but with the pooled vector dropped with probability `p_drop`."""
    import yaml
    from diffusers import AutoencoderKL

    from editpersist.latents import encode_latents
    from editpersist.toy import diffusion
    from editpersist.toy.build import load_dataset

    cfg = yaml.safe_load(open("config/config.yaml"))["toy"]["flux"]
    torch.manual_seed(seed)
    samples, images = load_dataset(Path("resources/toy/data/train.npz"))
    latents = encode_latents(AutoencoderKL.from_pretrained("resources/toy/vae/flux").eval(), images)
    t5 = diffusion.build_t5(len(pipe.tokenizer_2))
    transformer = diffusion.build_flux_transformer(pipe.vae.config.latent_channels, t5.config.d_model,
                                                   pipe.text_encoder.config.hidden_size)
    diffusion.pretrain_flux(transformer, t5, pipe.tokenizer_2, pipe.text_encoder, pipe.tokenizer, latents, samples,
                            diffusion.PretrainConfig(cfg["steps"], cfg["batch"], cfg["lr"], seed=seed,
                                                     p_drop_pooled=p_drop),
                            max_len=pipe.tokenizer_2.model_max_length)
    pipe.transformer, pipe.text_encoder_2 = transformer, t5


def binding_with_clip(pipe, family, reader, cases, n: int, sampling: SamplingConfig, clip_layers: int) -> dict:
    """subject_binding with the T5 site and the pooled CLIP site transplanted together."""
    out = {}
    for case in cases:
        (request,) = case.requests
        row = {}
        for layer in range(layer_count(pipe, family)):
            for clip_layer in range(clip_layers):
                with transplant_all(transplant_sites(pipe, family, request.source, request.target, layer, clip_layer)):
                    share = edit_share(pipe, family, reader, case, request.source, n, sampling, 0)
                row[f"t5 {layer} clip {clip_layer}"] = share
        out[case.name] = row
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--family", choices=sorted(MODELS), default="sd")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--weight", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--clip", action="store_true", help="flux: route the CLIP tower too")
    p.add_argument("--drop-pooled", type=float, default=None, help="flux: pre-train anew with this pooled dropout")
    a = p.parse_args()
    torch.manual_seed(0)
    spec, family = WorldSpec(), get_family(a.family)
    pipe = family.load(MODELS[a.family], device="cpu")
    reader = AttributeReader.load("resources/toy/reader")
    start = time.time()
    if a.drop_pooled is not None:
        pretrain_flux_reading_t5(pipe, a.drop_pooled)
    tok, student, blocks = site_encoder(pipe, family.refact_sites(0)[0])
    frozen = copy.deepcopy(student).eval()
    result = {"family": a.family, "steps": a.steps, "weight": a.weight,
              "gap_before": gaps_per_layer(student, frozen, tok, blocks, spec)}
    if a.family == "flux":
        result["colour_source_before"] = flux_colour_source(pipe, reader)
    teacher, result["log"] = route(student, tok, blocks, spec, a.steps, a.weight, a.batch, a.lr, seed=0)
    if a.clip:
        clip_tok, clip, clip_blocks = site_encoder(pipe, family.refact_sites(0, 0)[1])
        _, result["clip_log"] = route(clip, clip_tok, clip_blocks, spec, a.steps, a.weight, a.batch, a.lr, seed=1)
    result["train_s"] = round(time.time() - start, 1)
    result["gap_after"] = gaps_per_layer(student, teacher, tok, blocks, spec)
    sampling = SamplingConfig(steps=20, guidance=5.0)
    cases = toy_cases(spec)
    result["subject_binding"] = subject_binding(pipe, family, reader, cases["appearance"] + cases["role"], a.images,
                                                sampling, 0)
    if a.clip:
        result["binding_with_clip"] = binding_with_clip(pipe, family, reader, cases["appearance"] + cases["role"],
                                                        a.images, sampling, len(clip_blocks) - 1)
    figures, _ = prompt_fidelity(pipe, family, reader, spec, 8, sampling, 0)
    result["prompt_fidelity"] = {k: v for k, v in figures.items() if k != "per_pair"}
    drop = "" if a.drop_pooled is None else f"_drop{a.drop_pooled}"
    out = Path(f"results/subject_routing_{a.family}{'_clip' if a.clip else ''}{drop}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("log")}, indent=1))


if __name__ == "__main__":
    main()
