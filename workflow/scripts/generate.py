from pathlib import Path

from editpersist.evaluation.generation import run_generation
from editpersist.evaluation.prompts import QualityConfig
from editpersist.runtime import pick_device
from editpersist.sampling import SamplingConfig
from editpersist.workflow import run


def job(sm):
    rec = sm.params.job
    run_generation(
        model_dir=Path(sm.input.model), family_name=rec["family"], group=sm.wildcards.group,
        members={state: [Path(p) for p in layers] for state, layers in rec["members"].items()},
        prompt_set=sm.wildcards.prompt_set, cases=list(rec["cases"]), quality=QualityConfig(**sm.params.quality),
        n_per_prompt=sm.params.n, n_source=sm.params.n_source, sampling=SamplingConfig(**rec["sampling"]),
        seed=sm.params.seed, device=pick_device(sm.params.device), out=Path(sm.output.images),
        precision=sm.params.precision, subject_prompts=tuple(rec["subject_prompts"]))


run(snakemake, job)
