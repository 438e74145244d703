from pathlib import Path

from editpersist.runtime import pick_device
from editpersist.stages.edit import run_layer_stats
from editpersist.workflow import run

run(snakemake, lambda sm: run_layer_stats(
    Path(sm.input.model), sm.params.job["family"], sm.wildcards.editor, dict(sm.params.job["editor_cfg"]),
    sm.params.seed, pick_device(sm.params.device), Path(sm.output.stats)))
