# The rehearsal of the published grid (config/rehearsal.yaml): the inputs a real run reads,
# built from nothing. Models are tiny random pipelines of the real architectures saved as
# model folders; the judge a random open_clip directory; photos, FID reference images and
# ReFACT's corpus are files of the formats a user supplies.


rule rehearsal_corpus:
    output:
        corpus=f"{REHEARSAL}/corpus.txt",
    log:
        "logs/rehearsal/corpus.log",
    benchmark:
        "benchmarks/rehearsal/corpus.tsv"
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        texts=lambda wc: rehearsal_texts(),
    script:
        "../scripts/rehearsal_corpus.py"


rule rehearsal_model:
    input:
        corpus=rules.rehearsal_corpus.output.corpus,
    output:
        model=directory(f"{REHEARSAL}/models/{{family}}"),
    log:
        "logs/rehearsal/model_{family}.log",
    benchmark:
        "benchmarks/rehearsal/model_{family}.tsv"
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seed=config["seed"],
    script:
        "../scripts/rehearsal_model.py"


rule rehearsal_judge:
    output:
        judge=directory(f"{REHEARSAL}/judge"),
    log:
        "logs/rehearsal/judge.log",
    benchmark:
        "benchmarks/rehearsal/judge.tsv"
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seed=config["seed"],
    script:
        "../scripts/rehearsal_judge.py"


rule rehearsal_images:
    # A DreamBooth-style subject folder (photos/<name>, larger than the models' resolution so
    # the loader's crop and resize run) or the FID reference folder (reference).
    output:
        images=directory(f"{REHEARSAL}/{{folder}}"),
    log:
        "logs/rehearsal/{folder}.log",
    benchmark:
        "benchmarks/rehearsal/{folder}.tsv"
    conda:
        "../../envs/editpersist.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        n=lambda wc: 16 if wc.folder == "reference" else 4,
        size=lambda wc: 32 if wc.folder == "reference" else 48,
        seed=config["seed"],
    script:
        "../scripts/rehearsal_images.py"
