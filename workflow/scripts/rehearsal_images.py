import zlib
from pathlib import Path

from editpersist.rehearsal import write_image_folder
from editpersist.workflow import run

# Each folder its own images: the seed mixes in the folder's name.
run(snakemake, lambda sm: write_image_folder(Path(sm.output.images), sm.params.n, sm.params.size,
                                             sm.params.seed * 1_000_003 + zlib.crc32(sm.wildcards.folder.encode())))
