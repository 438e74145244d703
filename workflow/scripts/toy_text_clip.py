from pathlib import Path

from editpersist.toy import build
from editpersist.workflow import run

run(snakemake, lambda sm: build.build_text_clip(
    Path(sm.input.data), Path(sm.input.tokenizer), Path(sm.output.model), sm.params.cfg, sm.params.seed,
    Path(sm.output.stats)))
