from pathlib import Path

from editpersist.toy import build
from editpersist.workflow import run

# SD-style VAEs have 4 latent channels and no shift; FLUX's has 16 and a shift factor.
LATENT = {"sd": (4, False), "flux": (16, True)}

run(snakemake, lambda sm: build.build_vae(
    Path(sm.input.data), Path(sm.output.vae), *LATENT[sm.wildcards.kind], sm.params.cfg, sm.params.seed,
    Path(sm.output.stats)))
