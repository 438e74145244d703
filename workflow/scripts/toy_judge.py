from pathlib import Path

from editpersist.toy import build
from editpersist.workflow import run

run(snakemake, lambda sm: build.build_judge(
    Path(sm.input.data), Path(sm.output.judge), sm.params.cfg, sm.params.seed, Path(sm.output.stats)))
