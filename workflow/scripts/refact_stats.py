from pathlib import Path

from editpersist.runtime import pick_device
from editpersist.stages.edit import run_refact_stats
from editpersist.workflow import run

run(snakemake, lambda sm: run_refact_stats(
    Path(sm.input.model), sm.params.family, dict(sm.params.cfg), sm.params.seed, pick_device(sm.params.device),
    Path(sm.output.stats)))
