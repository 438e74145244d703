# Fine-tune stage: a model state (base, or base + edit delta) -> a fine-tuned state.
# The unedited control lives under results/states/<model>/base/ft/... and is trained once
# per (model, fine-tuner, fine-tune data), shared by every editor and task.


rule class_images:
    input:
        model=model_input,
        delta=start_delta,
    output:
        images=in_results("states/{model}/{start}/class_images/{subject}.npz"),
    log:
        in_logs("class_images/{model}/{start}/{subject}.log"),
    benchmark:
        in_benchmarks("class_images/{model}/{start}/{subject}.tsv")
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        runtime=job_runtime("class_images"),
        mem_mb=job_mem_mb("class_images"),
        gpu=job_gpus("class_images"),
        gpu_mem_mb=job_gpu_mem_mb("class_images"),
    params:
        job=class_images_job,
        n=config["finetune_data"]["n_class_images"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/class_images.py"


rule finetune:
    input:
        model=model_input,
        delta=start_delta,
        class_images=class_images_input,
        photos=subject_input,
    output:
        # One directory per fine-tune seed inside (seed<k>/): one job trains every seed.
        state=directory(in_results("states/{model}/{start}/ft/{finetuner}/{subject}")),
    log:
        in_logs("finetune/{model}/{start}/{finetuner}/{subject}.log"),
    benchmark:
        in_benchmarks("finetune/{model}/{start}/{finetuner}/{subject}.tsv")
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        runtime=job_runtime("finetune"),
        mem_mb=job_mem_mb("finetune"),
        gpu=job_gpus("finetune"),
        gpu_mem_mb=job_gpu_mem_mb("finetune"),
    params:
        job=finetune_job,
        data_seed=config["seed"],
        n_images=config["finetune_data"]["n_images"],
        device=config["device"],
    script:
        "../scripts/finetune.py"
