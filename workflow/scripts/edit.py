from pathlib import Path

from editpersist.runtime import pick_device
from editpersist.sampling import SamplingConfig
from editpersist.stages.edit import run_edit, run_reedits
from editpersist.tasks.cases import case_from_record
from editpersist.workflow import run


def job(sm):
    """`edit` edits the base; `reedit` edits again the fine-tuned state of each seed of a fine-tune."""
    rec = sm.params.job
    args = dict(model_dir=Path(sm.input.model), family_name=rec["family"], editor_name=sm.wildcards.editor,
                editor_cfg=dict(rec["editor_cfg"]), case=case_from_record(rec["case"]), judge_dir=sm.params.judge,
                sampling=SamplingConfig(**rec["sampling"]), seed=sm.params.seed, device=pick_device(sm.params.device),
                stats_dir=Path(sm.input.stats) if sm.input.stats else None, reader_dir=sm.input.reader or None)
    if sm.rule == "reedit":
        run_reedits(Path(sm.input.delta), Path(sm.input.finetunes), list(rec["seeds"]), Path(sm.output.reedits),
                    **args)
    else:
        run_edit(out=Path(sm.output.delta), **args)


run(snakemake, job)
