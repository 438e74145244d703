from pathlib import Path

from editpersist.finetuners.config import FinetuneConfig
from editpersist.finetuners.subjects import make_subject
from editpersist.runtime import pick_device
from editpersist.stages.finetune import run_finetune_seeds
from editpersist.workflow import run


def job(sm):
    rec = sm.params.job
    cfg = dict(rec["cfg"])
    cfg["snapshots"] = tuple(cfg.get("snapshots", ()))
    run_finetune_seeds(
        Path(sm.input.model), rec["family"], Path(sm.input.delta) if sm.input.delta else None,
        FinetuneConfig(method=sm.wildcards.finetuner, **cfg), make_subject(rec["subject"]), sm.params.n_images,
        rec["resolution"],
        Path(sm.input.class_images) if sm.input.class_images else None, pick_device(sm.params.device),
        Path(sm.output.state), seeds=list(rec["seeds"]), data_seed=sm.params.data_seed)


run(snakemake, job)
