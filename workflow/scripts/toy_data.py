from pathlib import Path

from editpersist.toy import build
from editpersist.workflow import run

run(snakemake, lambda sm: build.build_data(
    Path(sm.output.data), sm.params.n, sm.params.seed, sm.params.size, Path(sm.output.stats)))
