# Config validation and helpers shared by all rule files.

from pathlib import Path

from snakemake.utils import validate

from editpersist.config import check_config
from editpersist.editors import EDITOR_MODES
from editpersist.tasks import load_cases

validate(config, "../../config/config.schema.yaml")
check_config(config)

TOY = "resources/toy"
TOY_STATS = f"{TOY}/stats"
TOY_MODELS = {m["name"]: m for m in config["models"] if m["path"].startswith(f"{TOY}/models/")}


def toy_model_dir(name):
    return f"{TOY}/models/{name}"

MODELS = {m["name"]: m for m in config["models"]}
CASES = load_cases(config["tasks"])
EDITORS = list(config["editors"])


def editor_fits(editor, case):
    """TIME and ReFACT only replace concepts: they have no erase or debias mode."""
    return all(r.mode in EDITOR_MODES[editor] for r in case.requests)



def model_input(wildcards):
    """The model directory; a toy model is an output of the toy rules, a real one must exist."""
    return MODELS[wildcards.model]["path"]


def judge_input(wildcards):
    """The toy judge is built by a rule, so it is a job input; an open_clip architecture
    name (e.g. "ViT-bigG-14") or a user's own directory is not a file Snakemake could make."""
    judge = config["judge"]["model"]
    return judge if judge.startswith(f"{TOY}/") else []


NAME = "[A-Za-z0-9][A-Za-z0-9-]*"
# Subject records as ToySubject takes them ("class" is a Python keyword in the config).
SUBJECTS = {
    s["name"]: {"name": s["name"], "cls": s["class"], "color": s["color"]}
    for s in config["finetune_data"]["subjects"]
}


def start_delta(wildcards):
    """The edit delta a state starts from; none for the base model."""
    if wildcards.start == "base":
        return []
    return f"results/states/{wildcards.model}/{wildcards.start}.safetensors"


def class_images_input(wildcards):
    if wildcards.finetuner != "dreambooth":
        return []
    return f"results/states/{wildcards.model}/{wildcards.start}/class_images/{wildcards.subject}.npz"


def edit_starts(model):
    """Every edited state of a model, as the `start` wildcard."""
    return [
        f"edit/{editor}/{task}/{case.name}"
        for editor in EDITORS
        for task, cases in CASES.items()
        for case in cases
        if editor_fits(editor, case)
    ]


def finetune_targets():
    return [
        f"results/states/{model}/{start}/ft/{finetuner}/{subject}"
        for model in MODELS
        for start in ["base"] + edit_starts(model)
        for finetuner in config["finetuners"]
        for subject in SUBJECTS
    ]


def edit_targets():
    return [f"results/states/{model}/{start}.safetensors" for model in MODELS for start in edit_starts(model)]


def refact_stats_input(wildcards):
    return f"results/states/{wildcards.model}/refact_stats" if wildcards.editor == "refact" else []


# ---- evaluation -------------------------------------------------------------------------

from editpersist.finetuners.subjects import ToySubject
from editpersist.states import STATE, parse_state, state_layers

EVAL = config["evaluation"]


def case_key_of(start):
    """'edit/<editor>/<task>/<edit>' -> the prompt set '<task>.<edit>'."""
    _, _, task, edit = start.split("/")
    return f"{task}.{edit}"


def images_dir(model, state, prompt_set):
    return f"results/images/{model}/{state}/{prompt_set}"


def subject_prompts(wildcards):
    """A fine-tuned state is also asked for its subject ("a sks square"): did the fine-tune take?"""
    subject = parse_state(wildcards.state).parts.get("subject")
    return [ToySubject(**SUBJECTS[subject]).instance_prompt] if subject else []


def state_layer_inputs(wildcards):
    return [f"results/states/{wildcards.model}/{layer}" for layer in state_layers(wildcards.state)]


def generation_targets(model):
    """Every (state, prompt set) a model's evaluation needs; shared states see every case."""
    fts = [(ft, subject) for ft in config["finetuners"] for subject in SUBJECTS]
    out = [images_dir(model, "base", "all")]
    out += [images_dir(model, f"base/ft/{ft}/{subject}", "all") for ft, subject in fts]
    for start in edit_starts(model):
        key = case_key_of(start)
        out.append(images_dir(model, start, key))
        for ft, subject in fts:
            out.append(images_dir(model, f"{start}/ft/{ft}/{subject}", key))
            if ft in EVAL["reedit"]:
                out.append(images_dir(model, f"{start}/ft/{ft}/{subject}/reedit", key))
            if ft in EVAL["transfer"]:
                out.append(images_dir(model, f"{start}/transfer/{ft}/{subject}", key))
    return out


def study_cells():
    """The persistence table's cells: (model, editor, task, edit, finetuner, subject)."""
    return [
        dict(zip(("model", "editor", "task", "edit", "finetuner", "subject"), (model, *start.split("/")[1:], ft, s)))
        for model in MODELS
        for start in edit_starts(model)
        for ft in config["finetuners"]
        for s in SUBJECTS
    ]


def reader_input(wildcards):
    """The toy world's attribute reader scores toy models; real models have no ground truth."""
    return f"{TOY}/reader" if wildcards.model in TOY_MODELS else []


def study_outputs():
    return [f"results/{name}" for name in ("persistence.csv", "persistence.parquet", "curves.csv", "reedit.csv",
                                            "transfer.csv", "judge_validity.csv", "finetune_quality.csv", "summary.md")]
