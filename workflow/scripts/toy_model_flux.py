from pathlib import Path

from editpersist.toy import build
from editpersist.workflow import run

run(snakemake, lambda sm: build.build_toy_flux(
    Path(sm.input.data), Path(sm.input.vae), Path(sm.input.text_clip), Path(sm.input.t5_tokenizer),
    Path(sm.output.model), sm.params.cfg, sm.params.seed, Path(sm.output.stats)))
