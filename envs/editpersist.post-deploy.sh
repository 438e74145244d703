#!/usr/bin/env bash
# Run by Snakemake inside the new conda env (envs/editpersist.yaml): installs this package,
# editable, from the workflow's folder, which the Snakefile exports as EDITPERSIST_ROOT. Its
# dependencies are the env's exact pins (--no-deps: pip changes none of them).
set -euo pipefail
root="${EDITPERSIST_ROOT:?EDITPERSIST_ROOT: the workflow folder (the Snakefile sets it)}"
python -m pip install --no-deps -e "$root"
python -c "import editpersist"
