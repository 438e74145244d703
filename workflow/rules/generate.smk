# Generation: one job per (model state, prompt set). The state is rebuilt from its layers
# (edit delta, fine-tune, re-edit) and loaded once; seeds are fixed per (prompt, index).


rule generate:
    input:
        model=model_input,
        layers=state_layer_inputs,
    output:
        images=directory("results/images/{model}/{state}/{prompt_set}"),
    log:
        "logs/generate/{model}/{state}/{prompt_set}.log",
    benchmark:
        "benchmarks/generate/{model}/{state}/{prompt_set}.tsv"
    wildcard_constraints:
        state=STATE,
        prompt_set=r"all|[a-z]+\.[A-Za-z0-9][A-Za-z0-9-]*",
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        mem_mb=job_mem_mb(64000),
        runtime=job_runtime(30, 120),
        gpu=gpus,
    params:
        family=lambda wc: MODELS[wc.model]["family"],
        tasks=config["tasks"],
        quality=EVAL["quality"],
        n=EVAL["images_per_prompt"],
        n_source=EVAL["images_per_source"],
        subject_prompts=subject_prompts,
        sampling=lambda wc: sampling_of(wc.model),
        seed=config["seed"],
        device=config["device"],
        precision=config["precision"],
    script:
        "../scripts/generate.py"
