# Scoring, the persistence table and its extensions, the weight-space diagnostic, figures.
# A model with more generation directories than `chunking.score_dirs` is scored by score_chunk
# jobs, and its score job joins their files (common.smk: score_chunks).


rule score:
    input:
        unpack(score_inputs),
    output:
        table=in_results("scores/{model}.parquet"),
        features=in_results("scores/{model}.features.npz"),
    log:
        in_logs("score/{model}.log"),
    benchmark:
        in_benchmarks("score/{model}.tsv")
    conda:
        "../../envs/editpersist.yaml"
    threads: 2
    resources:
        runtime=job_runtime("score"),
        mem_mb=job_mem_mb("score"),
        gpu=job_gpus("score"),
        gpu_mem_mb=job_gpu_mem_mb("score"),
    params:
        cases=CASE_RECORDS,
        quality=EVAL["quality"],
        subjects=SUBJECTS,
        unsafe_detector=EVAL["unsafe_detector"],
        nudenet_threshold=EVAL["nudenet_threshold"],
        judge=config["judge"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/score.py"


# A run of a model's generation directories; the first chunk also holds the fid reference.
use rule score as score_chunk with:
    input:
        images=score_chunk_dirs,
        judge=judge_input,
        reader=reader_input,
        quality=quality_inputs,
    output:
        table=in_results("scores/{model}_chunk-{chunk}.parquet"),
        features=in_results("scores/{model}_chunk-{chunk}.features.npz"),
    log:
        in_logs("score/{model}_chunk-{chunk}.log"),
    benchmark:
        in_benchmarks("score/{model}_chunk-{chunk}.tsv")


rule persistence:
    input:
        tables=expand(in_results("scores/{model}.parquet"), model=MODELS),
        features=expand(in_results("scores/{model}.features.npz"), model=MODELS),
    output:
        table=in_results("persistence.csv"),
        parquet=in_results("persistence.parquet"),
        by_seed=in_results("persistence_by_seed.csv"),
        by_seed_parquet=in_results("persistence_by_seed.parquet"),
        curves=in_results("curves.csv"),
        reedit=in_results("reedit.csv"),
        transfer=in_results("transfer.csv"),
        validity=in_results("judge_validity.csv"),
        finetune_quality=in_results("finetune_quality.csv"),
        summary=report(in_results("summary.md"), category="Summary", caption="../report/summary.rst"),
    log:
        in_logs("persistence.log"),
    benchmark:
        in_benchmarks("persistence.tsv")
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=lambda wc, attempt: 60 * attempt,
    params:
        models={name: m["family"] for name, m in MODELS.items()},
        cells=study_cells(),
        subjects=SUBJECTS,
        steps={m: {ft: grid.finetuner_settings(config, m, ft)["steps"] for ft in config["finetuners"]} for m in MODELS},
        cases=CASE_RECORDS,
        evaluation=EVAL,
    script:
        "../scripts/persistence.py"


rule weights:
    input:
        model=model_input,
        edits=lambda wc: [f"{RESULTS}/states/{wc.model}/{s}.safetensors" for s in edit_starts(wc.model)],
        finetunes=lambda wc: [t for t in finetune_targets() if t.startswith(f"{RESULTS}/states/{wc.model}/")],
    output:
        table=in_results("weights/{model}.csv"),
    log:
        in_logs("weights/{model}.log"),
    benchmark:
        in_benchmarks("weights/{model}.tsv")
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        mem_mb=weights_mem_mb,
        runtime=lambda wc, attempt: attempt * (30 if wc.model in BUILT_MODELS else 60),
    params:
        family=lambda wc: MODELS[wc.model]["family"],
        pairs=lambda wc: [c for c in study_cells() if c["model"] == wc.model],
        states=lambda wc: f"{RESULTS}/states/{wc.model}",
        device=config["device"],
    script:
        "../scripts/weights.py"


rule figures:
    input:
        table=in_results("persistence.csv"),
        curves=in_results("curves.csv"),
        weights=expand(in_results("weights/{model}.csv"), model=MODELS),
        scores=expand(in_results("scores/{model}.parquet"), model=MODELS),
        images=[d for model in MODELS for d in generation_targets(model)],
    output:
        heatmap=report(
            in_results("plots/retention_heatmap.png"), category="Retention", caption="../report/retention_heatmap.rst"
        ),
        forest=report(
            directory(in_results("plots/forest")),
            patterns=["{name}.png"],
            category="Retention",
            subcategory="Every cell, with its interval",
            caption="../report/forest.rst",
            labels={"panel": "{name}"},
        ),
        curves=report(
            in_results("plots/retention_curves.png"),
            category="Retention over steps",
            caption="../report/retention_curves.rst",
        ),
        weights=report(
            in_results("plots/weights_vs_retention.png"), category="Weight space", caption="../report/weights.rst"
        ),
        weights_table=in_results("weights.csv"),
        grids=report(
            directory(in_results("plots/grids")),
            patterns=["{name}.png"],
            category="Image grids",
            caption="../report/grids.rst",
            labels={"grid": "{name}"},
        ),
    log:
        in_logs("figures.log"),
    benchmark:
        in_benchmarks("figures.tsv")
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        cells=study_cells(),
        cases=CASE_RECORDS,
        # The image grids show each model's first seed of each fine-tuner.
        finetuners={m: {ft: grid.finetune_seeds(config, m, ft)[0] for ft in config["finetuners"]} for m in MODELS},
        k=EVAL["grid_images"],
    script:
        "../scripts/figures.py"
