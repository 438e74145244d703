from pathlib import Path

from editpersist.hub import download_snapshot
from editpersist.workflow import run

# The output is <cache>/models--<org>--<name>/snapshots/<revision>: the cache is three folders up.
run(snakemake, lambda sm: download_snapshot(sm.params.repo_id, sm.wildcards.revision,
                                            Path(sm.output.model).parents[2], sm.params.allow))
