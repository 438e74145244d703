from pathlib import Path

from editpersist.evaluation.study import write_frame
from editpersist.evaluation.weights import weight_diagnostics
from editpersist.runtime import pick_device
from editpersist.workflow import run

run(snakemake, lambda sm: write_frame(
    weight_diagnostics(Path(sm.input.model), sm.params.family, list(sm.params.pairs),
                       Path(sm.params.states), pick_device(sm.params.device)),
    Path(sm.output.table)))
