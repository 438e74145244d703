from pathlib import Path

from editpersist.rehearsal import build_judge
from editpersist.workflow import run

run(snakemake, lambda sm: build_judge(Path(sm.output.judge), sm.params.seed))
