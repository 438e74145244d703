from pathlib import Path

from editpersist.stages.edit import run_edit
from editpersist.sampling import SamplingConfig
from editpersist.runtime import pick_device
from editpersist.workflow import run

# Serves both `edit` (from the base) and `reedit` (from a fine-tuned edited state: params.layers).
run(snakemake, lambda sm: run_edit(
    model_dir=Path(sm.input.model), family_name=sm.params.family, editor_name=sm.wildcards.editor,
    editor_cfg=dict(sm.params.editor_cfg), case=sm.params.case[0],
    judge_dir=sm.params.judge, sampling=SamplingConfig(**sm.params.sampling), seed=sm.params.seed,
    device=pick_device(sm.params.device), out=Path(sm.output.delta),
    stats_dir=Path(sm.input.stats) if sm.input.stats else None,
    layers=[Path(p) for p in sm.params.layers]))
