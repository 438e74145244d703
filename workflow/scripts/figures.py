from pathlib import Path

import pandas as pd

from editpersist.evaluation.study import run_figures
from editpersist.grid import GridCell
from editpersist.tasks.cases import cases_from_record
from editpersist.workflow import run

run(snakemake, lambda sm: run_figures(
    persistence=pd.read_csv(sm.input.table), curves=pd.read_csv(sm.input.curves),
    weights=pd.concat([pd.read_csv(p) for p in sm.input.weights], ignore_index=True),
    score_tables={Path(p).stem: pd.read_parquet(p) for p in sm.input.scores},
    cells=[GridCell.from_record(c) for c in sm.params.cells],
    cases=cases_from_record(sm.params.cases), finetuners=dict(sm.params.finetuners), k=sm.params.k,
    out={key: Path(sm.output[key]) for key in ("heatmap", "forest", "curves", "weights", "weights_table", "grids")}))
