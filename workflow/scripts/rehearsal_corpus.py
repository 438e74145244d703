from pathlib import Path

from editpersist.rehearsal import write_corpus
from editpersist.workflow import run

run(snakemake, lambda sm: write_corpus(list(sm.params.texts), Path(sm.output.corpus)))
