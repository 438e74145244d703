from pathlib import Path

from editpersist.finetuners.subjects import make_subject
from editpersist.runtime import pick_device
from editpersist.sampling import SamplingConfig
from editpersist.stages.finetune import make_class_images
from editpersist.workflow import run


def job(sm):
    rec = sm.params.job
    make_class_images(
        Path(sm.input.model), rec["family"], Path(sm.input.delta) if sm.input.delta else None,
        make_subject(rec["subject"]), sm.params.n, SamplingConfig(**rec["sampling"]), sm.params.seed,
        pick_device(sm.params.device), Path(sm.output.images))


run(snakemake, job)
