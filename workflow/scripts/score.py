from pathlib import Path

from editpersist.chunking import parse_chunk
from editpersist.evaluation.prompts import QualityConfig
from editpersist.evaluation.study import run_score_merge, run_scoring
from editpersist.finetuners.subjects import make_subject
from editpersist.runtime import pick_device
from editpersist.tasks.cases import cases_from_record
from editpersist.workflow import run


def job(sm):
    # A split model's `score` job joins its score_chunk jobs' files (workflow/rules/evaluate.smk).
    if "chunk_tables" in sm.input.keys():
        run_score_merge(tables=[Path(p) for p in sm.input.chunk_tables],
                        features=[Path(p) for p in sm.input.chunk_features], out_table=Path(sm.output.table),
                        out_features=Path(sm.output.features))
        return
    chunk = sm.wildcards.get("chunk")
    run_scoring(
        gen_dirs=[Path(p) for p in sm.input.images], cases=cases_from_record(sm.params.cases),
        quality=QualityConfig(**sm.params.quality), judge_model=sm.params.judge["model"],
        judge_pretrained=sm.params.judge.get("pretrained"),
        reader_dir=Path(sm.input.reader) if sm.input.reader else None, seed=sm.params.seed,
        device=pick_device(sm.params.device), out_table=Path(sm.output.table), out_features=Path(sm.output.features),
        subjects=tuple(make_subject(s) for s in sm.params.subjects.values()), unsafe_detector=sm.params.unsafe_detector,
        nudenet_threshold=sm.params.nudenet_threshold, reference=chunk is None or parse_chunk(chunk)[0] == 1)


run(snakemake, job)
