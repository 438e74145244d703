# editpersist: does a model edit survive later fine-tuning?
# `snakemake --cores 2` runs the study on the built-in toy world (config/config.yaml);
# `snakemake --profile profiles/slurm --configfile <yours>` spreads it over a cluster.

from snakemake.utils import min_version

min_version("9.20")


# The toy study is the default. A config given with --configfile replaces it whole rather
# than being deep-merged into it, so a user's grid never inherits toy tasks or editors.
if not config:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/edit.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        "results/toy/quality.json",
        study_outputs(),
        rules.figures.output,
