"""Building the toy world, one function per workflow rule.

Each function reads its inputs from files, calls the modelling code, and writes
its outputs atomically together with a stats JSON (wall time, steps/s, peak
memory). The maths lives in the modules it calls.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..io import atomic_dir, atomic_path, write_json
from ..latents import encode_latents
from ..runtime import RunStats, seed_everything
from ..tokens import tokenize
from . import diffusion, render, routing, text_clip, tokenizers, unseen_rows
from . import reader as reader_mod
from . import vae as vae_mod
from .judge import train_judge
from .world import Sample, WorldSpec, sample_captions

log = logging.getLogger("editpersist")


# ------------------------------------------------------------------ data ---

def save_dataset(path: Path, samples: list[Sample], images: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, images=images, captions=np.array([s.caption for s in samples]),
                 colors=np.array([s.color for s in samples]), shapes=np.array([s.shape for s in samples]))


def load_dataset(path: Path) -> tuple[list[Sample], np.ndarray]:
    with np.load(path) as z:
        samples = [Sample(str(c), str(col), str(s)) for c, col, s in zip(z["captions"], z["colors"], z["shapes"])]
        return samples, z["images"]


def build_data(out: Path, n: int, seed: int, size: int, stats_out: Path) -> None:
    stats = RunStats("toy_data")
    samples = sample_captions(WorldSpec(), n, np.random.default_rng([seed, 1]))
    images = render.render_samples(samples, seed=seed, size=size)
    save_dataset(out, samples, images)
    stats.steps = n
    write_json(stats_out, stats.as_dict())


def training_sentences(samples: list[Sample], spec: WorldSpec) -> list[str]:
    # The full word list is appended so that every toy word, including the rare
    # token, is frequent enough to become one sentencepiece.
    return [s.caption for s in samples] + [" ".join(spec.words())] * 200


def build_tokenizers(data: Path, clip_dir: Path, t5_dir: Path, clip_max_length: int, t5_max_length: int,
                     t5_vocab_size: int, stats_out: Path) -> None:
    stats = RunStats("toy_tokenizers")
    spec = WorldSpec()
    samples, _ = load_dataset(data)
    tokenizers.build_clip_tokenizer(spec.words(), clip_dir, clip_max_length)
    t5 = tokenizers.build_t5_tokenizer(training_sentences(samples, spec), t5_dir, t5_vocab_size)
    # The pipelines read the padding length from tokenizer_2.model_max_length.
    t5.model_max_length = t5_max_length
    with atomic_dir(t5_dir) as tmp:
        t5.save_pretrained(tmp)
    write_json(stats_out, stats.as_dict())


# --------------------------------------------------------- components ------

def build_vae(data: Path, out: Path, latent_channels: int, with_shift: bool, cfg: dict, seed: int,
              stats_out: Path) -> None:
    stats = RunStats(f"toy_vae_{latent_channels}ch")
    seed_everything(seed)
    _, images = load_dataset(data)
    vae = vae_mod.build_vae(latent_channels, tuple(cfg["widths"]))
    losses = vae_mod.train_vae(vae, images, cfg["steps"], cfg["batch"], cfg["lr"], cfg["kl_weight"], seed)
    raw = vae_mod.encode_means(vae, images[:4096])
    vae_mod.fit_latent_normalisation(vae, raw, with_shift)
    stats.steps = cfg["steps"]
    stats.extra.update(final_loss=float(np.mean(losses[-50:])),
                       reconstruction_mae_0_255=vae_mod.reconstruction_error(vae, images[-512:]))
    with atomic_dir(out) as tmp:
        vae.save_pretrained(tmp)
    write_json(stats_out, stats.as_dict())


def build_text_clip(data: Path, clip_tok: Path, out: Path, cfg: dict, seed: int, stats_out: Path) -> None:
    from transformers import CLIPTokenizer

    stats = RunStats("toy_text_clip")
    seed_everything(seed)
    samples, images = load_dataset(data)
    tok = CLIPTokenizer.from_pretrained(clip_tok)
    model = text_clip.build_clip(len(tok), tok.model_max_length, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    losses = text_clip.train_clip(model, tok, images, samples, WorldSpec(), cfg["steps"], cfg["batch"], cfg["lr"], seed)
    stats.steps = cfg["steps"]
    stats.extra["final_loss"] = float(np.mean(losses[-50:]))
    tower = text_clip.text_tower(model)
    stats.extra["routing"] = route(tower, tok, tower.encoder.layers, cfg["routing"], seed)
    model.text_model.load_state_dict(tower.state_dict())
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    write_json(stats_out, stats.as_dict())


def route(encoder, tok, blocks, cfg: dict, seed: int) -> dict:
    """Subject routing of a built text encoder (toy/routing.py); its losses and the per-layer
    routing gap before and after, for the build's stats."""
    spec = WorldSpec()
    before = routing.routing_gaps(encoder, tok, blocks, spec)
    log = routing.route_encoder(encoder, tok, blocks, spec, routing.RoutingConfig(seed=seed, **cfg))
    return {"gap_before": before, "gap_after": routing.routing_gaps(encoder, tok, blocks, spec), "log": log}


def _save_pretrained_model(pipe, denoiser, losses: list[float], stats: RunStats, out: Path, stats_out: Path) -> None:
    """Save a pre-trained toy pipeline (with its loss curve) and the job's stats."""
    stats.steps = len(losses)
    stats.extra.update(final_loss=float(np.mean(losses[-100:])),
                       denoiser_params=sum(p.numel() for p in denoiser.parameters()))
    with atomic_dir(out) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / "loss_curve.json").write_text(json.dumps(losses[::10]))
    write_json(stats_out, stats.as_dict())


def train_unseen(parts: list[tuple], predict, frozen: list, samples: list[Sample], rows_cfg: dict,
                 seed: int) -> dict | None:
    """Train the unseen token rows of a built pipeline's text encoders (toy/unseen_rows.py);
    `parts` are (embedding, tokenizer, encode ids of captions) per encoder, `frozen` the modules
    `predict` runs (no gradient is computed for their weights). None when the family block's
    `unseen_rows.steps` is 0 (the rows keep their initialisation)."""
    if not rows_cfg["steps"]:
        return None
    for module in frozen:
        module.requires_grad_(False)
    captions, cap_idx = diffusion.caption_index(samples)
    encoders = [unseen_rows.encoder_rows(emb, tok, encode(captions)[cap_idx]) for emb, tok, encode in parts]
    return unseen_rows.train_unseen_rows(encoders, predict, unseen_rows.UnseenRowsConfig(seed=seed, **rows_cfg))


def build_toy_sd(data: Path, vae_dir: Path, clip_dir: Path, out: Path, cfg: dict, seed: int, stats_out: Path) -> None:
    from diffusers import AutoencoderKL
    from transformers import CLIPModel, CLIPTokenizer

    stats = RunStats("toy_sd")
    seed_everything(seed)
    samples, images = load_dataset(data)
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    tok = CLIPTokenizer.from_pretrained(clip_dir)
    encoder = text_clip.text_tower(CLIPModel.from_pretrained(clip_dir))
    latents = encode_latents(vae, images)
    unet = diffusion.build_sd_unet(vae.config.latent_channels, encoder.config.hidden_size,
                                   latent_size=latents.shape[-1])
    train_sched, sample_sched = diffusion.sd_schedulers()
    losses = diffusion.pretrain_sd(unet, train_sched, encoder, tok, latents, samples,
                                   diffusion.PretrainConfig(cfg["steps"], cfg["batch"], cfg["lr"], seed=seed,
                                                            p_drop_attribute=cfg["p_drop_attribute"]))
    stats.extra["unseen_rows"] = train_unseen(
        [(encoder.get_input_embeddings(), tok, lambda c: tokenize(tok, c).input_ids)],
        diffusion.sd_prediction(unet, train_sched, encoder, latents), [unet, encoder], samples, cfg["unseen_rows"], seed)
    pipe = diffusion.assemble_sd(vae, encoder, tok, unet, sample_sched)
    _save_pretrained_model(pipe, unet, losses, stats, out, stats_out)


def build_toy_flux(data: Path, vae_dir: Path, clip_dir: Path, t5_tok_dir: Path, out: Path, cfg: dict, seed: int,
                   stats_out: Path) -> None:
    from diffusers import AutoencoderKL
    from transformers import CLIPModel, CLIPTokenizer, T5Tokenizer

    stats = RunStats("toy_flux")
    seed_everything(seed)
    samples, images = load_dataset(data)
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    clip_tok = CLIPTokenizer.from_pretrained(clip_dir)
    clip_encoder = text_clip.text_tower(CLIPModel.from_pretrained(clip_dir))
    t5_tok = T5Tokenizer.from_pretrained(t5_tok_dir)
    t5 = diffusion.build_t5(len(t5_tok), layers=cfg["t5_layers"])
    latents = encode_latents(vae, images)
    transformer = diffusion.build_flux_transformer(vae.config.latent_channels, t5.config.d_model,
                                                   clip_encoder.config.hidden_size)

    def pretrain(steps: int, stage_seed: int, train_t5: bool) -> list[float]:
        return diffusion.pretrain_flux(transformer, t5, t5_tok, clip_encoder, clip_tok, latents, samples,
                                       diffusion.PretrainConfig(steps, cfg["batch"], cfg["lr"], seed=stage_seed,
                                                                p_drop_pooled=cfg["p_drop_pooled"],
                                                                p_drop_attribute=cfg["p_drop_attribute"]),
                                       max_len=t5_tok.model_max_length, train_t5=train_t5)

    losses = pretrain(cfg["steps"], seed, train_t5=True)
    stats.extra["routing"] = route(t5, t5_tok, t5.encoder.block, cfg["routing"], seed)
    # The transformer then learns on the routed T5 it is used with, T5 frozen, as toy SD's UNet
    # learns on its routed CLIP tower and real FLUX on a frozen T5. Trained only on the states
    # before routing, it read colour words from states the routing had moved, and a fine-tune of
    # its text stream erased them (docs/toy-world.md, "Fine-tune settings").
    losses += pretrain(cfg["steps_on_routed_t5"], seed + 1, train_t5=False)
    stats.extra["unseen_rows"] = train_unseen(
        [(t5.get_input_embeddings(), t5_tok, lambda c: diffusion.t5_ids(t5_tok, c, t5_tok.model_max_length)),
         (clip_encoder.get_input_embeddings(), clip_tok, lambda c: tokenize(clip_tok, c).input_ids)],
        diffusion.flux_prediction(transformer, t5, clip_encoder, latents), [transformer, t5, clip_encoder], samples,
        cfg["unseen_rows"], seed)
    pipe = diffusion.assemble_flux(vae, clip_encoder, clip_tok, t5, t5_tok, transformer)
    _save_pretrained_model(pipe, transformer, losses, stats, out, stats_out)


# ------------------------------------------------------ reader & judge -----

def build_reader(data: Path, out: Path, cfg: dict, seed: int, stats_out: Path) -> None:
    stats = RunStats("toy_reader")
    samples, images = load_dataset(data)
    reader = reader_mod.train_reader(images, [s.shape for s in samples], cfg["steps"], cfg["batch"], cfg["lr"], seed)
    reader.save(out)
    stats.steps = cfg["steps"]
    write_json(stats_out, stats.as_dict())


def build_judge(data: Path, out: Path, cfg: dict, seed: int, stats_out: Path) -> None:
    stats = RunStats("toy_judge")
    samples, images = load_dataset(data)
    # The judge has its own seed, distinct from the text encoder's, as a separately trained CLIP.
    train_judge(images, samples, WorldSpec(), out, cfg["steps"], cfg["batch"], cfg["lr"], seed + 1000)
    stats.steps = cfg["steps"]
    write_json(stats_out, stats.as_dict())
