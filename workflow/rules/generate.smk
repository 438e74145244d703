# Generation: one job per (model state group, prompt set): a state, or the states of every
# fine-tune seed of one fine-tune (editpersist.states.GROUP). Each state is rebuilt from its
# layers (edit delta, fine-tune, re-edit), the shared ones loaded once; noise seeds are fixed
# per (prompt, index). A prompt set with more prompts than `chunking.generate_prompts` is made
# by generate_chunk jobs, and its generate job gathers them (common.smk: generation_chunks).


rule generate:
    input:
        unpack(generate_inputs),
    output:
        images=directory(in_results("images/{model}/{group}/{prompt_set}")),
    log:
        in_logs("generate/{model}/{group}/{prompt_set}.log"),
    benchmark:
        in_benchmarks("generate/{model}/{group}/{prompt_set}.tsv")
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        runtime=job_runtime("generate"),
        mem_mb=job_mem_mb("generate"),
        gpu=job_gpus("generate"),
        gpu_mem_mb=job_gpu_mem_mb("generate"),
    params:
        job=generate_job,
        quality=EVAL["quality"],
        n=EVAL["images_per_prompt"],
        n_source=EVAL["images_per_source"],
        n_check=images_per_check(EVAL),
        seed=config["seed"],
        device=config["device"],
        precision=config["precision"],
    script:
        "../scripts/generate.py"


# A contiguous run of a prompt set's prompts, each image made in the batch the whole job makes
# it in; a temporary directory, its files linked into the gathered one.
use rule generate as generate_chunk with:
    input:
        model=model_input,
        layers=group_layer_inputs,
    output:
        images=temp(directory(in_results("images/{model}/{group}/{prompt_set}_chunk-{chunk}"))),
    log:
        in_logs("generate/{model}/{group}/{prompt_set}_chunk-{chunk}.log"),
    benchmark:
        in_benchmarks("generate/{model}/{group}/{prompt_set}_chunk-{chunk}.tsv")
