# Models named by a Hub id and a pinned commit (editpersist.hub): the snapshot the pipeline loads,
# fetched into the cache (hub_cache) only where allow_download is true; the config check stops a
# run that would need it otherwise. Every later rule reads the snapshot folder.


rule download_model:
    output:
        model=directory(f"{HUB_CACHE}/models--{{repo}}/snapshots/{{revision}}"),
    log:
        in_logs("download_model/{repo}/{revision}.log"),
    benchmark:
        in_benchmarks("download_model/{repo}/{revision}.tsv")
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        repo_id=lambda wc: HUB_IDS[(wc.repo, wc.revision)],
        allow=config["allow_download"],
    script:
        "../scripts/download_model.py"
