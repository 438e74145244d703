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
