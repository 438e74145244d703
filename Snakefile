# editpersist: does a model edit survive later fine-tuning?
# `snakemake --cores 2` runs the study on the built-in toy world (config/config.yaml);
# `snakemake --profile profiles/slurm --configfile <yours>` spreads it over a cluster.

import os
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

from editpersist.config import exit_on_error, is_dry_run, resolve_extends, validate_config
from editpersist.editors import check_editor_blocks

min_version("9.20")

# Where envs/editpersist.post-deploy.sh installs the package from when --sdm conda builds the
# rules' environment.
os.environ.setdefault("EDITPERSIST_ROOT", workflow.basedir)


# The toy study is the default. A config given with --configfile replaces it whole rather
# than being deep-merged into it, so a user's grid never inherits toy tasks or editors.
if not config:

    configfile: "config/config.yaml"


# A variant of another config (config/stress.yaml): that file with the variant's changes.
if "extends" in config:
    exit_on_error(resolve_extends, config)

PLANNING = is_dry_run(sys.argv)
# Checked before anything else: a bad config is one line and exit status 1, with nothing
# created. A dry run only plans, so model and data paths may still be placeholders.
exit_on_error(validate_config, config, PLANNING, Path(workflow.basedir) / "config/config.schema.yaml")
# Then every editor block by its editor's own parser (a layer above the config checks).
exit_on_error(check_editor_blocks, config, PLANNING)
validate(config, "config/config.schema.yaml")  # fills the schema's defaults


include: "workflow/rules/common.smk"


if "toy" in config:

    include: "workflow/rules/toy.smk"


include: "workflow/rules/rehearsal.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/hub.smk"
include: "workflow/rules/edit.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        # The toy world's quality report, when the grid has toy models.
        ["results/toy/quality.json"] if TOY_MODELS else [],
        study_outputs(),
        rules.figures.output,
