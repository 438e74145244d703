from pathlib import Path

from editpersist.hub import download_snapshot
from editpersist.workflow import run

run(snakemake, lambda sm: download_snapshot(sm.params.repo_id, sm.wildcards.revision, Path(sm.params.cache),
                                            sm.params.allow))
