# Fetching the pinned dataset files of the real study (design.md section 7). Runs only
# when the config sets allow_download: true; `snakemake download_datasets` fetches all.


rule download_dataset:
    output:
        csv="resources/datasets/{dataset}.csv",
        record="resources/datasets/{dataset}.json",
    log:
        "logs/datasets/{dataset}.log",
    benchmark:
        "benchmarks/datasets/{dataset}.tsv"
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        allow=config["allow_download"],
    script:
        "../scripts/download_dataset.py"


rule download_datasets:
    input:
        expand("resources/datasets/{dataset}.csv", dataset=list(DATASETS)),
