from pathlib import Path

from editpersist.evaluation.toy_report import write_quality
from editpersist.workflow import run

run(snakemake, lambda sm: write_quality(
    models=sm.params.models, model_dirs=[Path(p) for p in sm.input.models], reader_dir=Path(sm.input.reader),
    judge_dir=Path(sm.input.judge), stats_files=[Path(p) for p in sm.input.stats], n_per_pair=sm.params.n_per_pair,
    n_fresh=sm.params.n_fresh, sampling=sm.params.sampling, seed=sm.params.seed, out=Path(sm.output.quality),
    grids=[Path(p) for p in sm.output.grids]))
