# Building the toy world from nothing (design.md section 4). Each rule's params
# carry its config block, so changing the block rebuilds that piece and what
# depends on it; otherwise the toy world is built once and reused.


rule toy_data:
    output:
        data=f"{TOY}/data/train.npz",
        stats=f"{TOY_STATS}/data.json",
    log:
        "logs/toy/data.log",
    benchmark:
        "benchmarks/toy/data.tsv"
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        n=config["toy"]["n_train"],
        size=config["toy"]["image_size"],
        seed=config["seed"],
    script:
        "../scripts/toy_data.py"


rule toy_tokenizers:
    input:
        data=rules.toy_data.output.data,
    output:
        clip=directory(f"{TOY}/tokenizers/clip"),
        t5=directory(f"{TOY}/tokenizers/t5"),
        stats=f"{TOY_STATS}/tokenizers.json",
    log:
        "logs/toy/tokenizers.log",
    benchmark:
        "benchmarks/toy/tokenizers.tsv"
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cfg=config["toy"]["tokenizers"],
    script:
        "../scripts/toy_tokenizers.py"


rule toy_vae:
    input:
        data=rules.toy_data.output.data,
    output:
        vae=directory(f"{TOY}/vae/{{kind}}"),
        stats=f"{TOY_STATS}/vae_{{kind}}.json",
    log:
        "logs/toy/vae_{kind}.log",
    benchmark:
        "benchmarks/toy/vae_{kind}.tsv"
    conda:
        "../../envs/editpersist.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        cfg=config["toy"]["vae"],
        seed=config["seed"],
    script:
        "../scripts/toy_vae.py"


rule toy_text_clip:
    input:
        data=rules.toy_data.output.data,
        tokenizer=rules.toy_tokenizers.output.clip,
    output:
        model=directory(f"{TOY}/text_clip"),
        stats=f"{TOY_STATS}/text_clip.json",
    log:
        "logs/toy/text_clip.log",
    benchmark:
        "benchmarks/toy/text_clip.tsv"
    conda:
        "../../envs/editpersist.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        cfg=config["toy"]["text_clip"],
        seed=config["seed"],
    script:
        "../scripts/toy_text_clip.py"


rule toy_model_sd:
    input:
        data=rules.toy_data.output.data,
        vae=f"{TOY}/vae/sd",
        text_clip=rules.toy_text_clip.output.model,
    output:
        model=directory(f"{TOY}/models/toy-sd"),
        stats=f"{TOY_STATS}/model_toy-sd.json",
    log:
        "logs/toy/model_toy-sd.log",
    benchmark:
        "benchmarks/toy/model_toy-sd.tsv"
    conda:
        "../../envs/editpersist.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=60,
    params:
        cfg=config["toy"]["sd"],
        seed=config["seed"],
    script:
        "../scripts/toy_model_sd.py"


rule toy_model_flux:
    input:
        data=rules.toy_data.output.data,
        vae=f"{TOY}/vae/flux",
        text_clip=rules.toy_text_clip.output.model,
        t5_tokenizer=rules.toy_tokenizers.output.t5,
    output:
        model=directory(f"{TOY}/models/toy-flux"),
        stats=f"{TOY_STATS}/model_toy-flux.json",
    log:
        "logs/toy/model_toy-flux.log",
    benchmark:
        "benchmarks/toy/model_toy-flux.tsv"
    conda:
        "../../envs/editpersist.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=60,
    params:
        cfg=config["toy"]["flux"],
        seed=config["seed"],
    script:
        "../scripts/toy_model_flux.py"


rule toy_reader:
    input:
        data=rules.toy_data.output.data,
    output:
        reader=directory(f"{TOY}/reader"),
        stats=f"{TOY_STATS}/reader.json",
    log:
        "logs/toy/reader.log",
    benchmark:
        "benchmarks/toy/reader.tsv"
    conda:
        "../../envs/editpersist.yaml"
    threads: 2
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        cfg=config["toy"]["reader"],
        seed=config["seed"],
    script:
        "../scripts/toy_reader.py"


rule toy_judge:
    input:
        data=rules.toy_data.output.data,
    output:
        judge=directory(f"{TOY}/judge"),
        stats=f"{TOY_STATS}/judge.json",
    log:
        "logs/toy/judge.log",
    benchmark:
        "benchmarks/toy/judge.tsv"
    conda:
        "../../envs/editpersist.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        cfg=config["toy"]["judge"],
        seed=config["seed"],
    script:
        "../scripts/toy_judge.py"


rule toy_quality:
    input:
        models=[toy_model_dir(name) for name in TOY_MODELS],
        reader=rules.toy_reader.output.reader,
        judge=rules.toy_judge.output.judge,
        stats=expand(
            f"{TOY_STATS}/{{step}}.json",
            step=["data", "tokenizers", "vae_sd", "vae_flux", "text_clip", "reader", "judge"]
            + [f"model_{name}" for name in TOY_MODELS],
        ),
    output:
        quality="results/toy/quality.json",
        grids=report(
            expand("results/toy/fidelity_{model}.png", model=list(TOY_MODELS)),
            category="Toy world",
            caption="../report/toy_fidelity.rst",
        ),
    log:
        "logs/toy/quality.log",
    benchmark:
        "benchmarks/toy/quality.tsv"
    conda:
        "../../envs/editpersist.yaml"
    # One thread: a two-thread job waits until both cores are free, which on 2 cores is the end
    # of the study; with one it runs beside the study's jobs.
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        models=list(TOY_MODELS.values()),
        n_per_pair=config["toy"]["n_eval_per_pair"],
        n_fresh=config["toy"]["n_fresh_renders"],
        sampling=config["sampling"],
        seed=config["seed"],
    script:
        "../scripts/toy_quality.py"
