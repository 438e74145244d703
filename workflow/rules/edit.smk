# Edit stage: base model + edit case -> edit delta (changed tensors) and its JSON sidecar.


# The layer statistics an editor declares (EditorMethod.statistics), once per model.
rule layer_stats:
    input:
        model=model_input,
        files=layer_stats_files,
    output:
        stats=directory(in_results("states/{model}/layer_stats/{editor}")),
    log:
        in_logs("layer_stats/{model}/{editor}.log"),
    benchmark:
        in_benchmarks("layer_stats/{model}/{editor}.tsv")
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        runtime=job_runtime("layer_stats"),
        mem_mb=job_mem_mb("layer_stats"),
        gpu=job_gpus("layer_stats"),
        gpu_mem_mb=job_gpu_mem_mb("layer_stats"),
    params:
        job=editor_job,
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/layer_stats.py"


rule edit:
    input:
        model=model_input,
        judge=judge_input,
        stats=layer_stats_input,
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
        stats=layer_stats_input,
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
