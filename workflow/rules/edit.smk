# Edit stage: base model + edit case -> edit delta (changed tensors) and its JSON sidecar.


rule refact_stats:
    input:
        model=model_input,
        corpus=corpus_input,
    output:
        stats=directory(in_results("states/{model}/refact_stats")),
    log:
        in_logs("refact_stats/{model}.log"),
    benchmark:
        in_benchmarks("refact_stats/{model}.tsv")
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        runtime=job_runtime("refact_stats"),
        mem_mb=job_mem_mb("refact_stats"),
        gpu=job_gpus("refact_stats"),
        gpu_mem_mb=job_gpu_mem_mb("refact_stats"),
    params:
        family=lambda wc: MODELS[wc.model]["family"],
        cfg=config["editors"].get("refact"),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/refact_stats.py"


rule edit:
    input:
        model=model_input,
        judge=judge_input,
        stats=refact_stats_input,
        reader=meter_reader_input,
    output:
        delta=in_results("states/{model}/edit/{editor}/{task}/{edit}.safetensors"),
        sidecar=in_results("states/{model}/edit/{editor}/{task}/{edit}.json"),
    log:
        in_logs("edit/{model}/{editor}/{task}/{edit}.log"),
    benchmark:
        in_benchmarks("edit/{model}/{editor}/{task}/{edit}.tsv")
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        runtime=job_runtime("edit"),
        mem_mb=job_mem_mb("edit"),
        gpu=job_gpus("edit"),
        gpu_mem_mb=job_gpu_mem_mb("edit"),
    params:
        job=edit_job,
        judge=config["judge"]["model"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/edit.py"


# The same edit applied again to a fine-tuned edited model, for every seed of the fine-tune in
# one job: is the edit restored, and at what cost? Each delta holds new values on top of its
# seed's fine-tuned state (edit's body, its own files).
use rule edit as reedit with:
    input:
        model=model_input,
        delta=in_results("states/{model}/edit/{editor}/{task}/{edit}.safetensors"),
        finetunes=in_results("states/{model}/edit/{editor}/{task}/{edit}/ft/{finetuner}/{subject}"),
        judge=judge_input,
        stats=refact_stats_input,
        reader=meter_reader_input,
    output:
        reedits=directory(in_results("states/{model}/reedit/{editor}/{task}/{edit}/{finetuner}/{subject}")),
    log:
        in_logs("reedit/{model}/{editor}/{task}/{edit}/{finetuner}/{subject}.log"),
    benchmark:
        in_benchmarks("reedit/{model}/{editor}/{task}/{edit}/{finetuner}/{subject}.tsv")
    resources:
        runtime=job_runtime("reedit"),
        mem_mb=job_mem_mb("reedit"),
        gpu=job_gpus("reedit"),
        gpu_mem_mb=job_gpu_mem_mb("reedit"),
    params:
        job=reedit_job,
