from pathlib import Path

from editpersist.downloads import fetch
from editpersist.io import write_json
from editpersist.workflow import run


def job(sm):
    write_json(Path(sm.output.record), fetch(sm.wildcards.dataset, Path(sm.output.csv), sm.params.allow))


run(snakemake, job)
