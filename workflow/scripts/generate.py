from pathlib import Path

from editpersist.evaluation.generation import gather_generation, run_generation
from editpersist.evaluation.prompts import QualityConfig
from editpersist.runtime import pick_device
from editpersist.sampling import SamplingConfig
from editpersist.tasks.cases import case_from_record
from editpersist.workflow import run


def job(sm):
    rec = sm.params.job
    quality = QualityConfig(**sm.params.quality)
    # A split prompt set's `generate` job gathers its generate_chunk jobs' directories.
    if "chunks" in sm.input.keys():
        gather_generation(
            chunks=[Path(p) for p in sm.input.chunks], out=Path(sm.output.images), members=list(rec["members"]),
            cases=[case_from_record(c) for c in rec["cases"]], quality=quality, n_per_prompt=sm.params.n, n_source=sm.params.n_source,
            subject_prompts=tuple(rec["subject_prompts"]), n_check=sm.params.n_check)
        return
    run_generation(
        model_dir=Path(sm.input.model), family_name=rec["family"], group=sm.wildcards.group,
        members={state: [Path(p) for p in layers] for state, layers in rec["members"].items()},
        prompt_set=sm.wildcards.prompt_set, cases=[case_from_record(c) for c in rec["cases"]], quality=quality,
        n_per_prompt=sm.params.n, n_source=sm.params.n_source, sampling=SamplingConfig(**rec["sampling"]),
        seed=sm.params.seed, device=pick_device(sm.params.device), out=Path(sm.output.images),
        precision=sm.params.precision, subject_prompts=tuple(rec["subject_prompts"]),
        chunk=sm.wildcards.get("chunk"), n_check=sm.params.n_check)


run(snakemake, job)
