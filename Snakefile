# editpersist: does a model edit survive later fine-tuning?
# `snakemake --cores 2` runs the study on the built-in toy world (config/config.yaml);
# `snakemake --profile profiles/slurm --configfile <yours>` spreads it over a cluster.

from snakemake.utils import min_version

min_version("9.20")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/edit.smk"


rule all:
    input:
        "results/toy/quality.json",
        edit_targets(),
