# Config validation and helpers shared by all rule files.

from pathlib import Path

from snakemake.utils import validate

from editpersist.config import check_config

validate(config, "../../config/config.schema.yaml")
check_config(config)

TOY = "resources/toy"
TOY_STATS = f"{TOY}/stats"
TOY_MODELS = {m["name"]: m for m in config["models"] if m["path"].startswith(f"{TOY}/models/")}


def toy_model_dir(name):
    return f"{TOY}/models/{name}"
