# Config validation and helpers shared by all rule files.

import atexit
import functools
import math
from pathlib import Path

from snakemake.iocontainers import Wildcards

from editpersist import grid
from editpersist.chunking import CHUNK, chunk_count, chunk_names, fewest_chunks, parse_chunk, split_evenly
from editpersist.config import exit_on_error, is_built, output_roots
from editpersist.downloads import DATASETS
from editpersist.editors import EDITORS, editor_block, editor_meters
from editpersist.evaluation.prompts import QualityConfig, case_key, images_per_check, prompt_set
from editpersist.families import FAMILIES
from editpersist.finetuners.methods import FINETUNERS
from editpersist.finetuners.subjects import make_subject
from editpersist.hub import hub_cache, is_cached, repo_folder
from editpersist.states import GROUP, NAME, START, State, layer_target
from editpersist.tasks import case_named, load_cases
from editpersist.tasks.cases import TASKS, cases_record

RESULTS, LOGS, BENCHMARKS = output_roots(config)
TOY = "resources/toy"
REHEARSAL = "resources/rehearsal"
TOY_STATS = f"{TOY}/stats"
TOY_MODELS = {m["name"]: m for m in config["models"] if m["path"].startswith(f"{TOY}/models/")}
MODELS = {m["name"]: m for m in config["models"]}
# Models the workflow builds itself (toy world, rehearsal): small, CPU-sized jobs.
BUILT_MODELS = {name for name, m in MODELS.items() if is_built(m["path"])}
# Hub models (editpersist.hub: their path is the snapshot folder) the download_model rule fetches.
HUB_CACHE = hub_cache(config)
HUB_DOWNLOADS = {name for name, m in MODELS.items() if "hub" in m and not is_cached(Path(m["path"]))}
HUB_IDS = {(repo_folder(m["hub"]), m["revision"]): m["hub"] for m in MODELS.values() if "hub" in m}
CASES = exit_on_error(load_cases, config["tasks"], planning=PLANNING)
CELLS = grid.study_cells(config, CASES)
if not CELLS:
    exit_on_error(grid.no_cells, config)
EVAL = config["evaluation"]
# The edit cases as the jobs' params carry them, as plain data (tasks.cases.case_record), made once.
CASE_RECORDS = cases_record(CASES)
CASE_RECORD_OF = {case_key(c): r for task in CASES for c, r in zip(CASES[task], CASE_RECORDS[task])}
# Subject records as make_subject takes them ("class" is a Python keyword), each with the study's
# identifier word.
SUBJECTS = {
    s["name"]: {
        **{("cls" if k == "class" else k): v for k, v in s.items()},
        "identifier": config["finetune_data"]["identifier"],
    }
    for s in config["finetune_data"]["subjects"]
}


# Every wildcard's grammar, in one place for every rule: names and state starts and groups from
# editpersist.states, editors and fine-tuners from their registries (a new one needs no rule
# edit), tasks from editpersist.tasks, chunks from editpersist.chunking, families from theirs.
wildcard_constraints:
    model=NAME,
    editor="|".join(EDITORS),
    task="|".join(TASKS),
    edit=NAME,
    finetuner="|".join(FINETUNERS),
    subject=NAME,
    start=START,
    group=GROUP,
    prompt_set=rf"all|(?:{'|'.join(TASKS)})\.{NAME}",
    chunk=CHUNK,
    dataset="|".join(DATASETS),
    # The families a rehearsal model is built for; the toy world's VAEs (one per toy family);
    # the rehearsal's image folders (the FID reference, one per subject's photos).
    family="|".join(FAMILIES),
    kind="sd|flux",
    folder=rf"reference|photos/{NAME}",
    # A Hub model's folder in the cache, and its pinned commit (editpersist.hub).
    repo=r"[A-Za-z0-9][A-Za-z0-9._-]*--[A-Za-z0-9][A-Za-z0-9._-]*",
    revision="[0-9a-f]{40}",


def in_results(path):
    return f"{RESULTS}/{path}"


def in_logs(path):
    return f"{LOGS}/{path}"


def in_benchmarks(path):
    return f"{BENCHMARKS}/{path}"


def toy_model_dir(name):
    return f"{TOY}/models/{name}"


# ---- resources ---------------------------------------------------------------------------
# A real model's job asks for what its sizing says (editpersist.sizing: peak GPU memory and
# FLOPs at the model's published shapes, a time at the config's GPU and utilisation, times the
# safety factors of `sizing:`); a model the workflow built (toy world, rehearsal) runs on CPUs
# with the small constants below. Planning evaluates these once per job (13,050 on the paper
# grid); each job is sized once and the shapes' footprints come from a cache.


# A GPU for a real model's job (unless the config pins the CPU); toy models run on CPUs.
def uses_gpu(model):
    return model not in BUILT_MODELS and config["device"] != "cpu"


# Minutes per attempt of a built model's job (per fine-tune seed where the job covers several).
BUILT_RUNTIME = {"layer_stats": 30, "edit": 30, "reedit": 30, "class_images": 30, "finetune": 60, "generate": 30}
PER_SEED_RULES = ("reedit", "finetune", "generate")


def make_sizer():
    """The sizer of a config with real models (imported only then: it pulls in the footprint engine)."""
    from editpersist.sizing.sizer import GridSizer, report_path

    sizer = GridSizer(config, Path(RESULTS) / "bench/footprints.json")
    atexit.register(sizer.save_new_footprints)
    if report_path():
        atexit.register(sizer.write_report, report_path())
    return sizer


SIZER = make_sizer() if not set(MODELS) <= BUILT_MODELS else None


def sizing_record(kind, wildcards):
    """What a job of `kind` runs, as the sizing reads it: the record its rule passes its script."""
    if kind in ("edit", "reedit"):
        base = edit_job(wildcards) if kind == "edit" else reedit_job(wildcards)
        return {**base, "editor": wildcards.editor, "task": wildcards.task}
    if kind == "layer_stats":
        return {**editor_job(wildcards), "editor": wildcards.editor}
    if kind == "finetune":
        return {**finetune_record(wildcards), "finetuner": wildcards.finetuner}
    if kind == "class_images":
        return class_images_job(wildcards)
    if kind in ("generate", "generate_chunk"):
        return generate_record(wildcards)
    if kind == "score":
        return {"n_images": sum(generated_images(wildcards.model, d) for d in generation_targets(wildcards.model))}
    if kind == "score_chunk":
        return {"n_images": sum(generated_images(wildcards.model, d) for d in score_chunk_dirs(wildcards))}
    return model_record(wildcards)


# Snapshots kept per model and fine-tuner (a model entry may override a fine-tuner's keys).
SNAPSHOTS = {
    m: {ft: len(grid.finetuner_settings(config, m, ft).get("snapshots", [])) for ft in config["finetuners"]}
    for m in MODELS
}


def generate_record(wildcards):
    """The generation record with its image count (of its chunk's prompts, for a chunk)."""
    from editpersist.sizing.plan import generation_images

    record = generate_job(wildcards)
    n_images = generation_images(
        prompt_set(wildcards.prompt_set, CASES),
        record["subject_prompts"],
        record["members"],
        EVAL,
        SNAPSHOTS[wildcards.model],
        wildcards.get("chunk"),
    )
    return {**record, "n_images": n_images}


@functools.cache
def generated_images(model, directory):
    """Images of one generation target (a directory images_dir names)."""
    group, prompt_set = directory.removeprefix(f"{RESULTS}/images/{model}/").rsplit("/", 1)
    return generate_record(Wildcards(fromdict={"model": model, "group": group, "prompt_set": prompt_set}))["n_images"]


def job_kind(kind, wildcards):
    """A job's kind as the sizing names it: a chunk job (generate_chunk, score_chunk)
    inherits its rule's resources, so it is told apart by its `chunk` wildcard."""
    return f"{kind}_chunk" if "chunk" in wildcards.keys() else kind


def gathers(kind, wildcards):
    """A split job's generate or score job only joins its chunks' files: no GPU, no model."""
    if "chunk" in wildcards.keys() or kind not in ("generate", "score"):
        return False
    if kind == "score":
        return len(score_chunks(wildcards.model)) > 1
    return generation_chunks(wildcards.model, wildcards.group, wildcards.prompt_set) > 1


def sized(kind, wildcards):
    """Whether a job's resources come from its sizing: a real model's job that runs the model."""
    return uses_gpu(wildcards.model) and not gathers(kind, wildcards)


def sized_job(kind, wildcards):
    """The job's sizing; a job that cannot fit the GPU stops the plan with one line."""
    from editpersist.sizing.sizer import job_key

    kind = job_kind(kind, wildcards)
    return exit_on_error(SIZER.size, kind, job_key(wildcards), wildcards.model, sizing_record(kind, wildcards))


def job_gpus(kind):
    return lambda wildcards: int(sized(kind, wildcards))


def job_runtime(kind):
    """Minutes, growing with each retry (a job killed at its time limit gets more)."""

    def runtime(wildcards, attempt):
        if sized(kind, wildcards):
            return attempt * sized_job(kind, wildcards).runtime_min
        seeds = len(job_seeds(wildcards)) if kind in PER_SEED_RULES else 1
        return attempt * seeds * BUILT_RUNTIME.get(kind, 60)

    return runtime


def job_mem_mb(kind):
    """Host memory: the weights a job loads (staged in host memory before moving to the GPU)
    plus the process; 4 GB for a model the workflow built."""
    return lambda wildcards: 1024 * sized_job(kind, wildcards).host_mem_gb if sized(kind, wildcards) else 4000


def job_gpu_mem_mb(kind):
    """The GPU memory the job's sizing needs (with its safety factor); 0 without a GPU. Use it
    with a partition constraint where GPUs of several sizes share one partition."""
    return lambda wildcards: 1024 * sized_job(kind, wildcards).gpu_mem_gb if sized(kind, wildcards) else 0


def weights_mem_mb(wildcards):
    """The weight-space diagnostic holds a real model twice in fp32 on the CPU (base and state)."""
    if wildcards.model in BUILT_MODELS:
        return 4000
    return 1024 * math.ceil(2 * SIZER.weight_gb(wildcards.model, "fp32") + SIZER.settings.host_overhead_gb)


def job_seeds(wildcards):
    """The fine-tune seeds one job covers: its fine-tuner's (a `finetuner` wildcard, or the one
    a state group names); one for the base and edited states."""
    group = State.parse_group(wildcards.group) if "group" in wildcards.keys() else None
    finetuner = wildcards.get("finetuner") or (group.finetuner if group else None)
    return list(grid.finetune_seeds(config, wildcards.model, finetuner)) if finetuner else [0]


# ---- job records ---------------------------------------------------------------------------
# What a model job reads from the study, in one dict per job: the job's name-keyed slice of
# what was parsed once above (the rules pass no raw config block). One callable per rule, not
# one per field: planning the paper grid evaluates each for every one of its 13,050 jobs. A
# dict, because Snakemake tracks a parameter for reruns (--rerun-triggers params) by repr only
# inside builtin containers.


def model_record(wildcards):
    return {"family": MODELS[wildcards.model]["family"], "sampling": sampling_of(wildcards.model)}


def editor_job(wildcards):
    """A model with an editor's block: the layer_stats job's record, and the base of an edit's."""
    return {**model_record(wildcards), "editor_cfg": editor_block(config["editors"], wildcards.editor)}


def edit_job(wildcards):
    return {
        **editor_job(wildcards),
        "case": CASE_RECORD_OF[case_key(case_named(CASES, wildcards.task, wildcards.edit))],
    }


def reedit_job(wildcards):
    return {**edit_job(wildcards), "seeds": job_seeds(wildcards)}


def class_images_job(wildcards):
    return {**model_record(wildcards), "subject": SUBJECTS[wildcards.subject]}


def finetune_job(wildcards):
    """The fine-tune's record, with the knobs its sizing needs to fit the GPU turned on."""
    record = finetune_record(wildcards)
    if uses_gpu(wildcards.model):
        record["cfg"].update({knob: True for knob in sized_job("finetune", wildcards).knobs})
    return record


def finetune_record(wildcards):
    settings = grid.finetuner_settings(config, wildcards.model, wildcards.finetuner)
    cfg = {k: v for k, v in settings.items() if k != "seeds"}
    return {
        "family": MODELS[wildcards.model]["family"],
        "seeds": job_seeds(wildcards),
        "cfg": cfg,
        "subject": SUBJECTS[wildcards.subject],
        "resolution": sampling_of(wildcards.model).get("height", 32),
    }


def generate_job(wildcards):
    return {
        **model_record(wildcards),
        "members": group_layers(wildcards),
        "cases": [CASE_RECORD_OF[case_key(c)] for c in prompt_set(wildcards.prompt_set, CASES)],
        "subject_prompts": subject_prompts(wildcards),
    }


# ---- inputs ------------------------------------------------------------------------------


def model_input(wildcards):
    """The model directory; a built model is an output of the toy or rehearsal rules, a real one
    must exist (check_config refused it otherwise), except while a dry run plans with placeholders."""
    path = MODELS[wildcards.model]["path"]
    if wildcards.model in HUB_DOWNLOADS:  # made by the download_model rule
        return path
    return [] if PLANNING and wildcards.model not in BUILT_MODELS and not Path(path).exists() else path


def built_input(path):
    """A path one of the workflow's rules makes is a job input (so it is made first); a user's
    own file, or an open_clip architecture name such as "ViT-bigG-14", is not."""
    return path if path and is_built(path) else []


def judge_input(wildcards):
    return built_input(config["judge"]["model"])


def subject_input(wildcards):
    return built_input(SUBJECTS[wildcards.subject].get("path"))


def quality_inputs(wildcards):
    return [EVAL["quality"][key] for key in ("captions", "reference") if built_input(EVAL["quality"][key])]


def sampling_of(model):
    """The sampling block with the model's own overrides (resolution, steps, guidance)."""
    return {**config["sampling"], **MODELS[model].get("sampling", {})}


def start_delta(wildcards):
    """The edit delta a state starts from; none for the base model."""
    start = State.parse(wildcards.start)
    return [] if start.kind == "base" else str(start.path(f"{RESULTS}/states/{wildcards.model}"))


def class_images_input(wildcards):
    if not FINETUNERS[wildcards.finetuner].prior_preservation:
        return []
    return f"{RESULTS}/states/{wildcards.model}/{wildcards.start}/class_images/{wildcards.subject}.npz"


def layer_stats_input(wildcards):
    """The layer statistics the editor declares (EditorMethod.statistics); none for most."""
    if EDITORS[wildcards.editor].statistics is None:
        return []
    return f"{RESULTS}/states/{wildcards.model}/layer_stats/{wildcards.editor}"


def layer_stats_files(wildcards):
    """The files an editor's block names for its statistics (a corpus), where a rule makes them."""
    block = editor_block(config["editors"], wildcards.editor)
    return [p for p in map(built_input, EDITORS[wildcards.editor].statistics.files(block).values()) if p]


def meter_reader_input(wildcards):
    """An editor meter that reads targets with the toy world's reader (MeterSpec.needs_reader_model)."""
    specs = editor_meters(config["editors"], wildcards.editor)
    return reader_input(wildcards) if any(spec.needs_reader_model for spec in specs) else []


def reader_input(wildcards):
    """The toy world's attribute reader scores toy models; real models have no ground truth."""
    return f"{TOY}/reader" if wildcards.model in TOY_MODELS else []


def subject_prompts(wildcards):
    return group_subject_prompts(wildcards.group)


def group_subject_prompts(group):
    """A fine-tuned state is also asked for its subject ("a sks square"): did the fine-tune take?"""
    subject = State.parse_group(group).subject
    return [make_subject(SUBJECTS[subject]).instance_prompt] if subject else []


def group_layers(wildcards):
    """Each member state of a group (one per fine-tune seed) with the paths of its layers."""
    return {
        state.name: [f"{RESULTS}/states/{wildcards.model}/{layer}" for layer in state.layers()]
        for state in State.parse_group(wildcards.group).members(job_seeds(wildcards))
    }


def group_layer_inputs(wildcards):
    """The workflow outputs holding a group's layers (a fine-tune's seeds share one directory)."""
    return grid.unique(layer_target(p) for layers in group_layers(wildcards).values() for p in layers)


def rehearsal_texts():
    """ReFACT's statistics corpus in the rehearsal, and what its FLUX's T5 tokenizer learns from."""
    from editpersist.evaluation.prompts import QualityConfig, quality_captions
    from editpersist.rehearsal import corpus_texts

    return corpus_texts(CASES, quality_captions(QualityConfig(**EVAL["quality"])))


# ---- targets: everything follows from the grid's cells ------------------------------------


def edit_starts(model):
    """Every edited state of a model, as the `start` wildcard."""
    return grid.edit_starts(CELLS, model)


def edit_targets():
    return [f"{RESULTS}/states/{model}/{start}.safetensors" for model in MODELS for start in edit_starts(model)]


def finetune_targets():
    return [f"{RESULTS}/states/{model}/{group}" for model in MODELS for group in grid.finetune_groups(CELLS, model)]


def case_key_of(start):
    """'edit/<editor>/<task>/<edit>' -> the prompt set '<task>.<edit>'."""
    _, _, task, edit = start.split("/")
    return f"{task}.{edit}"


def images_dir(model, group, prompt_set):
    return f"{RESULTS}/images/{model}/{group}/{prompt_set}"


def generation_targets(model):
    """Every (state, prompt set) a model's evaluation needs; shared states see every case."""
    cells = [c for c in CELLS if c.model == model]
    out = [images_dir(model, "base", "all")]
    out += [images_dir(model, c.base_ft_group, "all") for c in cells]
    for c in cells:
        key = case_key_of(c.start)
        groups = [c.start, c.edited_ft_group]
        groups += [c.reedit_group] if c.finetuner in EVAL["reedit"] else []
        groups += [c.transfer_group] if c.finetuner in EVAL["transfer"] else []
        out += [images_dir(model, g, key) for g in groups]
    return grid.unique(out)


# ---- chunks: a long job split into shorter ones (editpersist.chunking) --------------------
# A split model's scoring is score_chunk jobs, each reading a run of its generation directories,
# and a `score` job joining their files; a split prompt set's images are made by generate_chunk
# jobs, each a run of its prompts, and a `generate` job gathers them into the directory an
# unsplit job makes. Either way the files are the unsplit run's, byte for byte.


def chunk_limits(model):
    """The most generation directories one score job of `model` reads (`score_dirs`) and the most
    prompts one of its generation jobs makes (`generate_prompts`); None: no limit. The only
    place the limits are read."""
    return config["chunking"]


@functools.cache
def score_chunks(model):
    """The generation directories of each of `model`'s score_chunk jobs, in generation_targets'
    order; a single list when its scoring is not split (one score job reads them all). A real
    model's scoring is also split as finely as its sizing needs: the fewest chunks whose
    largest fits the maximum wall time."""
    dirs = generation_targets(model)
    n = chunk_count(len(dirs), chunk_limits(model)["score_dirs"])
    if uses_gpu(model):
        cap = SIZER.images_within_wall(model, "score", model_record(Wildcards(fromdict={"model": model})))
        images = [generated_images(model, d) for d in dirs]
        n = max(n, fewest_chunks(len(dirs), lambda k: max(sum(part) for part in split_evenly(images, k)), cap))
    return split_evenly(dirs, n)


@functools.cache
def generation_chunks(model, group, set_name):
    """How many generate_chunk jobs make the images of (model, state group, prompt set); 1: one
    generate job makes them all. A real model's job is also split as finely as its sizing
    needs: the fewest chunks whose largest fits the maximum wall time."""
    limit = chunk_limits(model)["generate_prompts"]
    n_prompts = prompt_count(set_name, tuple(group_subject_prompts(group)))
    n = 1 if limit is None else chunk_count(n_prompts, limit)
    if uses_gpu(model):
        from editpersist.chunking import chunk_names as names
        from editpersist.sizing.plan import generation_images

        wc = Wildcards(fromdict={"model": model, "group": group, "prompt_set": set_name})
        record = generate_job(wc)
        cap = SIZER.images_within_wall(model, "generate", record)
        images = functools.partial(
            generation_images,
            prompt_set(set_name, CASES),
            record["subject_prompts"],
            record["members"],
            EVAL,
            SNAPSHOTS[model],
        )
        n = max(n, fewest_chunks(n_prompts, lambda k: max(images(c) for c in names(k)) if k > 1 else images(), cap))
    return n


@functools.cache
def prompt_count(name, subjects):
    """Prompts one generation job of prompt set `name` makes (state_prompts; while a dry run
    plans without the captions file, max_captions stand-ins: the most there can be)."""
    from editpersist.evaluation.generation import state_prompts
    from editpersist.sizing.plan import planned_captions

    quality = QualityConfig(**EVAL["quality"])
    n, n_source = EVAL["images_per_prompt"], EVAL["images_per_source"]
    return len(state_prompts(prompt_set(name, CASES), quality, n, n_source, subjects, planned_captions(quality)))


def generation_chunk_dir(model, group, prompt_set, chunk):
    return f"{images_dir(model, group, prompt_set)}_chunk-{chunk}"


def score_chunk_file(model, chunk, suffix):
    return f"{RESULTS}/scores/{model}_chunk-{chunk}{suffix}"


def generate_inputs(wildcards):
    """An unsplit prompt set's generate job loads the model and the group's layers; a split
    one's gathers its chunks' directories."""
    n = generation_chunks(wildcards.model, wildcards.group, wildcards.prompt_set)
    if n == 1:
        return {"model": model_input(wildcards), "layers": group_layer_inputs(wildcards)}
    dirs = [generation_chunk_dir(wildcards.model, wildcards.group, wildcards.prompt_set, c) for c in chunk_names(n)]
    return {"chunks": dirs}


def score_inputs(wildcards):
    """An unsplit model's score job reads its images with the judge (and reader); a split one's
    joins its score_chunk jobs' tables and features."""
    chunks = chunk_names(len(score_chunks(wildcards.model)))
    if len(chunks) == 1:
        return {
            "images": generation_targets(wildcards.model),
            "judge": judge_input(wildcards),
            "reader": reader_input(wildcards),
            "quality": quality_inputs(wildcards),
        }
    return {
        "chunk_tables": [score_chunk_file(wildcards.model, c, ".parquet") for c in chunks],
        "chunk_features": [score_chunk_file(wildcards.model, c, ".features.npz") for c in chunks],
    }


def score_chunk_dirs(wildcards):
    index, _ = parse_chunk(wildcards.chunk)
    return score_chunks(wildcards.model)[index - 1]


def study_cells():
    """The persistence table's cells as records: (model, editor, task, edit, finetuner, subject, seeds)."""
    return [c.record() for c in CELLS]


def study_outputs():
    return [
        f"{RESULTS}/{name}"
        for name in (
            "persistence.csv",
            "persistence.parquet",
            "curves.csv",
            "reedit.csv",
            "transfer.csv",
            "judge_validity.csv",
            "finetune_quality.csv",
            "summary.md",
        )
    ]
