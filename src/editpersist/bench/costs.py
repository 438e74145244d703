"""What a grid costs on one GPU: GPU-hours and disk, from published per-step timings.

The model (BENCHMARKS.md, "Cost model", gives the formula and the result for
config/paper.yaml):

  GPU-s = sum over generate jobs  (images x steps x t_step(model) + t_load(model))
        + sum over fine-tune jobs (train steps x t_step(model) x TRAIN x CKPT + t_load)
        + sum over edit jobs      (t_edit(editor) + t_load)
        + one ReFACT statistics pass per model, class images for DreamBooth, scoring.

t_step is one denoising step with classifier-free guidance (two network evaluations) at
the model's resolution, batch 1, on an H100: published A100 figures divided by
A100_TO_H100. The per-model figures (step time, native resolution, load time, checkpoint
bytes) are each family's `costs` (editpersist.families). Every constant says where it comes
from; the ones marked "assumed" are estimates, to be replaced by measured figures (`python -m
editpersist.bench finetune/generation` on the GPU machine).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..editors import EDITORS, editor_block
from ..families import get_family
from ..finetuners.methods import FINETUNERS
from ..evaluation.prompts import images_per_check
from ..grid import GridCell, finetune_groups, finetune_seeds, finetune_states, finetuner_settings
from ..sampling import SamplingConfig
from ..states import State

# Assumed: H100 SXM vs A100 on these fp16/bf16 networks (peak dense tensor FLOPs differ by
# 3.2x; memory-bound attention and VAE keep real pipelines nearer 2x).
A100_TO_H100 = 2.0
# A training step (forward + backward ~ 3 forward passes, one sample, no CFG) against an
# inference step with CFG (2 forward passes): 1.5x. Gradient checkpointing repeats the
# forward (4/3); DreamBooth's prior loss doubles the batch.
TRAIN = 1.5
CKPT = 4 / 3
# ReFACT's layer statistics: one forward pass of the text encoder per corpus text (assumed
# 2 ms for 100,000 texts at batch 256).
STATS_S_PER_TEXT = 0.002
# Assumed judge time per image (open_clip ViT-bigG-14 image tower, batched, bf16).
SCORE_S_PER_IMAGE = 0.01
# Measured (BENCHMARKS.md, storage): edit delta bytes / checkpoint bytes, UCE at SD1.4's shapes.
# A fine-tune's share is its method's (FinetuneMethod.state_share), an edit's time its editor's
# (EditorMethod.reference_gpu_s).
EDIT_SHARE = 0.018
# Assumed PNG bytes per generated image at 512 and 1024 pixels.
PNG_BYTES = {512: 0.4e6, 1024: 1.5e6}
# Assumed probes per edit case where the dataset file is not at hand: (prompts generated with
# the source's count, others). TIMED and RoAD rows have 5 positives and 5 negatives, plus the
# edit's target prompt (EditCase.target); a profession has 10 prompts, 3 of them phrasings its
# debias edit balances (with the source: 4 at the source's count;
# evaluation.prompts.probe_image_count); I2P is an estimate.
PROBES = {"appearance": (1, 11), "role": (1, 11), "debias": (4, 7), "unsafe": (0, 200)}


@dataclass(frozen=True)
class ModelCost:
    gpu_hours: dict[str, float]  # per stage
    images: int
    disk_bytes: dict[str, float]


def images_per_case(task: str, ev: dict) -> int:
    source, others = PROBES[task]
    return source * ev["images_per_source"] + others * ev["images_per_prompt"]


def quality_images(ev: dict) -> int:
    q = ev["quality"]
    return q["max_captions"] * q["images_per_caption"]


def model_images(cells: list[GridCell], model: str, config: dict) -> dict[str, int]:
    """Images per kind of state, as evaluation.generation makes them."""
    ev = config["evaluation"]
    mine = [c for c in cells if c.model == model]
    cases = {(c.task, c.edit) for c in mine}
    all_cases = sum(images_per_case(t, ev) for t, _ in cases)
    n_snap = {ft: len(finetuner_settings(config, model, ft).get("snapshots", [])) for ft in config["finetuners"]}
    sources = len(cases)  # a snapshot generates each case's source prompt
    out = {"base": all_cases + quality_images(ev), "base_ft": 0, "edited": 0, "edited_ft": 0, "reedit": 0,
           "transfer": 0}
    n, n_check = ev["images_per_prompt"], images_per_check(ev)
    # Snapshots (source prompts at each) are kept on a fine-tune's first seed only.
    for state in map(State.parse, finetune_states(mine, model)):
        ft = state.finetuner
        if state.kind == "base_ft":  # every case; the subject prompt; snapshots
            first = state.seed == finetune_seeds(config, model, ft)[0]
            out["base_ft"] += all_cases + quality_images(ev) + n_check + (n_snap[ft] * sources * n if first else 0)
    for c in mine:  # each state once per fine-tune seed
        per = images_per_case(c.task, ev) + quality_images(ev)
        out["edited_ft"] += len(c.seeds) * (per + n_check) + n_snap[c.finetuner] * n
        out["reedit"] += len(c.seeds) * per if c.finetuner in ev["reedit"] else 0
        out["transfer"] += len(c.seeds) * per if c.finetuner in ev["transfer"] else 0
    out["edited"] = sum(images_per_case(t, ev) + quality_images(ev) for t, _ in cases)
    return out


def model_cost(cells: list[GridCell], model: dict, config: dict) -> ModelCost:
    ref, name = get_family(model["family"]).costs, model["name"]
    # The settings a job samples with: the study's, the model's overrides, SamplingConfig's defaults.
    sampling = asdict(SamplingConfig(**{**config.get("sampling", {}), **model.get("sampling", {})}))
    step = ref.a100_step_s / A100_TO_H100 * (sampling["height"] / ref.native_resolution) ** 2
    mine = [c for c in cells if c.model == name]
    states = [State.parse(s) for s in finetune_states(mine, name)]
    images = model_images(cells, name, config)
    n_images = sum(images.values())
    # One generation job per edited state and per fine-tune (all its seeds), plus the base.
    gen_jobs = len({c.start for c in mine}) + len(finetune_groups(mine, name)) + 1
    hours = {"generate": (n_images * sampling["steps"] * step + gen_jobs * ref.load_s) / 3600}
    ft_s = 0.0
    for state in states:
        ft = state.finetuner
        cfg = finetuner_settings(config, name, ft)
        prior = 2 if FINETUNERS[ft].prior_preservation else 1
        factor = TRAIN * (CKPT if cfg.get("gradient_checkpointing") else 1) * prior
        ft_s += cfg["steps"] * cfg["batch"] * step * factor + ref.load_s
    hours["finetune"] = ft_s / 3600
    starts = {c.start: (c.editor, c.task) for c in mine}

    def edit_s(editor: str, task: str) -> float:
        """One edit: the editor's assumed time, plus the images it generates and judges and the
        fine-tune steps it simulates, as it declares them (EditorMethod.work; a measuring loop
        at its most rounds)."""
        work = EDITORS[editor].work(editor_block(config["editors"], editor), model["family"], task)
        return (EDITORS[editor].reference_gpu_s + work.meter_images * sampling["steps"] * step
                + work.simulated_steps * work.simulated_batch * step * TRAIN)

    hours["edit"] = sum(edit_s(e, t) + ref.load_s for e, t in starts.values()) / 3600
    # One re-edit job per fine-tune group: a load, then the cell's editor once per seed.
    hours["reedit"] = sum(len(c.seeds) * edit_s(c.editor, c.task) + ref.load_s
                          for c in mine if c.finetuner in config["evaluation"]["reedit"]) / 3600
    dreambooth = sum(1 for s in states if FINETUNERS[s.finetuner].prior_preservation)
    hours["class_images"] = dreambooth * config["finetune_data"]["n_class_images"] * sampling["steps"] * step / 3600
    hours["score"] = n_images * SCORE_S_PER_IMAGE / 3600
    stats = [EDITORS[e].statistics.work(editor_block(config["editors"], e), model["family"])
             for e in dict.fromkeys(e for e, _ in starts.values()) if EDITORS[e].statistics]
    hours["layer_stats"] = sum(w.texts for w in stats) * STATS_S_PER_TEXT / 3600
    size = ref.checkpoint_bytes
    ft_bytes = sum(FINETUNERS[s.finetuner].state_share * size for s in states)
    png = PNG_BYTES[512 if sampling["height"] <= 512 else 1024]
    disk = {"edit_deltas": len(starts) * EDIT_SHARE * size, "finetuned_states": ft_bytes,
            "images": n_images * png}
    return ModelCost(hours, n_images, disk)
