from pathlib import Path

from editpersist.toy import build
from editpersist.workflow import run

run(snakemake, lambda sm: build.build_tokenizers(
    Path(sm.input.data), Path(sm.output.clip), Path(sm.output.t5), sm.params.cfg["clip_max_length"],
    sm.params.cfg["t5_max_length"], sm.params.cfg["t5_vocab_size"], Path(sm.output.stats)))
