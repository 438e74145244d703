from pathlib import Path

from editpersist.evaluation.study import StudySpec, image_counts, load_model_scores, run_study
from editpersist.grid import GridCell
from editpersist.tasks.cases import cases_from_record
from editpersist.workflow import run


def job(sm):
    ev = sm.params.evaluation
    scores = {
        model: load_model_scores(Path(table), Path(features), ev["scorer"], ev["bootstrap"]["samples"],
                                 ev["bootstrap"]["seed"], image_counts(ev))
        for model, table, features in zip(sm.params.models, sm.input.tables, sm.input.features)
    }
    spec = StudySpec(models=dict(sm.params.models), cells=[GridCell.from_record(c) for c in sm.params.cells],
                     subjects=dict(sm.params.subjects),
                     finetune_steps=dict(sm.params.steps), reedit=tuple(ev["reedit"]), transfer=tuple(ev["transfer"]),
                     min_effect=ev["min_effect"], min_ft_fidelity=ev["min_ft_fidelity"],
                     min_target_reach=ev["min_target_reach"])
    run_study(scores, spec, cases_from_record(sm.params.cases), Path(sm.output.table).parent, Path(sm.output.summary))


run(snakemake, job)
