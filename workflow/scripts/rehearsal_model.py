from pathlib import Path

from editpersist.rehearsal import build_pipeline
from editpersist.workflow import run

run(snakemake, lambda sm: build_pipeline(sm.wildcards.family, Path(sm.input.corpus).read_text().splitlines(),
                                         Path(sm.output.model), sm.params.seed))
