# Edit stage: base model + edit case -> edit delta (changed tensors) and its JSON sidecar.


wildcard_constraints:
    model="[A-Za-z0-9][A-Za-z0-9-]*",
    editor="uce|time|refact",
    task="appearance|role|debias|unsafe",
    edit="[A-Za-z0-9][A-Za-z0-9-]*",


rule refact_stats:
    input:
        model=model_input,
    output:
        stats=directory("results/states/{model}/refact_stats"),
    params:
        family=lambda wc: MODELS[wc.model]["family"],
        cfg=config["editors"].get("refact"),
        seed=config["seed"],
        device=config["device"],
    threads: 2
    resources:
        mem_mb=8000,
        runtime=lambda wc, attempt: 30 * attempt,
    conda:
        "../../envs/editpersist.yaml"
    log:
        "logs/refact_stats/{model}.log",
    benchmark:
        "benchmarks/refact_stats/{model}.tsv"
    script:
        "../scripts/refact_stats.py"


rule edit:
    input:
        model=model_input,
        judge=judge_input,
        stats=refact_stats_input,
    output:
        delta="results/states/{model}/edit/{editor}/{task}/{edit}.safetensors",
        sidecar="results/states/{model}/edit/{editor}/{task}/{edit}.json",
    params:
        family=lambda wc: MODELS[wc.model]["family"],
        editor_cfg=lambda wc: config["editors"][wc.editor],
        tasks=config["tasks"],
        judge=config["judge"]["model"],
        sampling=config["sampling"],
        seed=config["seed"],
        device=config["device"],
    threads: 2
    resources:
        mem_mb=8000,
        runtime=lambda wc, attempt: 30 * attempt,
    conda:
        "../../envs/editpersist.yaml"
    log:
        "logs/edit/{model}/{editor}/{task}/{edit}.log",
    benchmark:
        "benchmarks/edit/{model}/{editor}/{task}/{edit}.tsv"
    script:
        "../scripts/edit.py"
