"""Each GPU job of the workflow as `Work`, from the record its rule passes to its script.

One builder per rule; `work_of(rule, ...)` dispatches. The builders read the same records
the rules' `params.job` hold (workflow/rules/common.smk), so what is sized is what runs.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ..chunking import chunk_of
from ..editors import EDITORS
from ..editors.base import EditWork
from ..evaluation.generation import state_prompts
from ..errors import ConfigError
from ..evaluation.prompts import QualityConfig, images_per_check, quality_captions
from ..finetuners.core import ENCODE_BATCH
from ..finetuners.methods import FINETUNERS
from ..states import State
from ..tasks.cases import EditCase
from . import architectures as archs
from . import footprint as fp
from .work import Work, pipeline_dtype, sampling_calls, weight_bytes


def _work(rule, job, model, arch, dtype, calls, *, resident: float | None = None, **kw) -> Work:
    """A job that loads the whole pipeline and keeps it on the GPU unless told otherwise."""
    calls = tuple((w, n) for w, n in calls if n > 0)
    load = kw.pop("load_bytes", weight_bytes(arch, dtype))
    return Work(rule, job, model, arch, dtype, weight_bytes(arch, dtype) if resident is None else resident, calls,
                load_bytes=load, **kw)


def edit_calls(arch: str, family_name: str, work: EditWork, sampling: dict, dtype: str) -> list[tuple[object, float]]:
    """One edit as its editor declares it (EditWork): prompt encodings, then the closed-form
    solve or the optimisation on a text-encoder layer; the fine-tunes it simulates; the images
    it generates and judges (every round of a measuring loop, at most)."""
    from ..families import get_family

    family = get_family(family_name)
    calls: list[tuple[object, float]] = [(fp.TextEncode(arch, enc, 32, dtype), 1) for enc in family.text_encoders]
    if work.text_steps:
        for enc in fp.refact_encoders(arch, work.pooled_clip):
            calls.append((fp.RefactStep(arch, enc, work.text_prompts, dtype, work.text_layer), work.text_steps))
    else:
        calls.append((fp.ClosedFormSolve(arch, family_name), 1))
    if work.simulated_steps:
        res = sampling["height"]
        calls.append((fp.TrainStep(arch, "full", work.simulated_batch, res, res, dtype, True, "adamw", 0, False),
                      work.simulated_steps))
    if work.meter_images:
        batch = sampling.get("batch", 1)
        calls += sampling_calls(arch, family_name, sampling, work.meter_images, dtype)
        calls.append((fp.JudgeImages(batch, "bf16"), math.ceil(work.meter_images / batch)))
    return calls


def edit_work(rule: str, job: str, model: str, arch: str, record: dict, editor: str, task: str, precision: str,
              seeds: int = 1) -> Work:
    dtype = pipeline_dtype(record["family"], precision)
    work = EDITORS[editor].work(record["editor_cfg"], record["family"], task)
    calls = edit_calls(arch, record["family"], work, record["sampling"], dtype)
    return _work(rule, job, model, arch, dtype, [(w, n * seeds) for w, n in calls])


def layer_stats_work(job: str, model: str, arch: str, record: dict, editor: str, precision: str) -> Work:
    """An editor's layer statistics (LayerStatistics.work): one pass over the corpus per site,
    each layer it covers in each text encoder it edits."""
    dtype = pipeline_dtype(record["family"], precision)
    stats = EDITORS[editor].statistics.work(record["editor_cfg"], record["family"])
    batches = math.ceil(stats.texts / stats.batch)
    calls = [(fp.LayerStats(arch, enc, layer, stats.batch, dtype), batches)
             for layer in stats.layers for enc in fp.refact_encoders(arch, stats.pooled_clip)]
    return _work("layer_stats", job, model, arch, dtype, calls)


def class_images_work(job: str, model: str, arch: str, record: dict, n: int, precision: str) -> Work:
    dtype = pipeline_dtype(record["family"], precision)
    return _work("class_images", job, model, arch, dtype, sampling_calls(arch, record["family"], record["sampling"], n, dtype))


def finetune_work(job: str, model: str, arch: str, record: dict, finetuner: str, n_images: int, n_class: int,
                  precision: str, knobs: tuple[str, ...] = ()) -> Work:
    """Every seed's training steps; the images' latents and captions encoded once per seed
    (finetuners.core). Adapter weights and a full fine-tune's denoiser train in fp32 (mixed
    precision, as the diffusers examples); the frozen rest stays in the pipeline's dtype."""
    cfg, family_name = record["cfg"], record["family"]
    dtype = pipeline_dtype(family_name, precision)
    spec = FINETUNERS[finetuner]
    res = record["resolution"]
    method = "full" if not spec.adapter else finetuner
    checkpointing = bool(cfg.get("gradient_checkpointing")) or "gradient_checkpointing" in knobs
    optimizer = "adamw8bit" if "adamw8bit" in knobs else "adamw"
    step = fp.TrainStep(arch, method, cfg["batch"], res, res, dtype, checkpointing, optimizer, cfg.get("rank", 4),
                        spec.prior_preservation)
    seeds = len(record["seeds"])
    n_encode = n_images + (n_class if spec.prior_preservation else 0)
    calls = [(step, seeds * cfg["steps"]),
             (fp.VaeEncode(arch, ENCODE_BATCH, res, res, dtype), seeds * math.ceil(n_encode / ENCODE_BATCH))]
    # The training step traces the denoiser's own weights; the frozen rest stays resident
    # unless offloaded to the CPU once the latents and captions are encoded.
    frozen = tuple(c for c in archs.components(arch) if c != archs.denoiser_of(arch))
    resident = 0.0 if "offload_frozen" in knobs else weight_bytes(arch, dtype, frozen)
    # Snapshots of the trained tensors stay on the GPU until the seed is saved (first seed only).
    snapshot_bytes = len(cfg.get("snapshots", ())) * fp.trainable_bytes(step)
    return _work("finetune", job, model, arch, dtype, calls, resident=resident, keep_bytes=snapshot_bytes, knobs=knobs)


def planned_captions(quality: QualityConfig) -> list[str]:
    """The quality captions, or `max_captions` stand-ins while a dry run plans without the file."""
    try:
        return quality_captions(quality)
    except ConfigError:
        return [f"<quality caption {i}>" for i in range(quality.max_captions)]


def generation_images(cases: list[EditCase], subject_prompts: tuple[str, ...], members, evaluation: dict,
                      snapshots: dict[str, int], chunk: str | None = None) -> int:
    """Images one generation job makes (its prompt set's `cases`, its `members` states): every
    member state's prompts, plus each snapshot's source prompts for a fine-tuned member that kept
    snapshots (its fine-tune's first seed); `chunk`: of that run of the prompts only
    (evaluation.generation.run_generation)."""
    quality = QualityConfig(**evaluation["quality"])
    counts = state_prompts(cases, quality, evaluation["images_per_prompt"], evaluation["images_per_source"],
                           tuple(subject_prompts), planned_captions(quality), n_check=images_per_check(evaluation))
    keep = set(chunk_of(list(counts), chunk)) if chunk else set(counts)
    per_state = sum(n for p, n in counts.items() if p in keep)
    curve = len({c.source.prompt for c in cases} & keep) * evaluation["images_per_prompt"]
    total = 0
    for i, state in enumerate(members):
        total += per_state
        name = State.parse(state)
        if name.kind in ("base_ft", "edited_ft") and i == 0:
            total += snapshots.get(name.finetuner, 0) * curve
    return total


def generate_work(job: str, model: str, arch: str, record: dict, n_images: int, precision: str) -> Work:
    dtype = pipeline_dtype(record["family"], precision)
    # Each member state's own layer (a fine-tune, a re-edit) is read besides the base.
    return _work("generate", job, model, arch, dtype, sampling_calls(arch, record["family"], record["sampling"], n_images, dtype), images_io=n_images)


def score_work(rule: str, job: str, model: str, arch: str, n_images: int, judge_batch: int = 64) -> Work:
    """The judge's image tower over every image (read from PNG), its text tower over the
    prompts (small beside the images: counted as one text batch per image batch)."""
    batches = math.ceil(n_images / judge_batch)
    calls = [(fp.JudgeImages(judge_batch, "bf16"), batches), (fp.JudgeTexts(judge_batch, "bf16"), batches)]
    judge = fp.judge_bytes("bf16")
    return _work(rule, job, model, arch, "bf16", calls, resident=judge, images_io=n_images, load_bytes=judge)

def build_work(rule: str, job: str, model: str, arch: str, record: dict, config: dict,
               knobs: tuple[str, ...] = ()) -> Work:
    """The Work of one job of `rule`, from the record the rule passes its script (plus the
    wildcards the record lacks: editor, task, finetuner; image counts for scoring)."""
    precision = config.get("precision", "auto")
    data = config["finetune_data"]
    if rule == "layer_stats":
        return layer_stats_work(job, model, arch, record, record["editor"], precision)
    if rule in ("edit", "reedit"):
        return edit_work(rule, job, model, arch, record, record["editor"], record["task"], precision,
                         seeds=len(record.get("seeds", [0])))
    if rule == "class_images":
        return class_images_work(job, model, arch, record, data["n_class_images"], precision)
    if rule == "finetune":
        return finetune_work(job, model, arch, record, record["finetuner"], data["n_images"], data["n_class_images"],
                             precision, knobs)
    if rule in ("generate", "generate_chunk"):
        return replace(generate_work(job, model, arch, record, record["n_images"], precision), rule=rule)
    if rule in ("score", "score_chunk"):
        return score_work(rule, job, model, arch, record["n_images"])
    raise ValueError(f"no sizing for rule {rule!r}")
