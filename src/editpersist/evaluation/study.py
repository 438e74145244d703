"""The evaluation jobs' I/O: scoring a model's images, the study tables, the report figures."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..finetuners.subjects import FolderSubject, ToySubject, make_subject, relation
from ..grid import GridCell
from ..io import atomic_path, save_arrays
from ..judges.clip import ClipJudge
from ..metrics.task_metrics import fit_inception_references, fit_references
from ..states import BASE, State
from ..tasks.cases import EditCase
from .generation import load_images
from .persistence import (COLUMNS, SEED_COLUMNS, Cell, ModelScores, SeedRule, curve_rows, finetune_quality_rows,
                          judge_validity, persistence_rows, reedit_rows, table_frame, transfer_rows)
from .prompts import PRIMARY, QualityConfig, images_per_check, probe_counts
from .scoring import inception_of_model, merge_score_arrays, merge_score_tables, score_model
from .summary import states_retention, write_summary

log = logging.getLogger("editpersist")


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, float_format="%.6g")


def run_scoring(gen_dirs: list[Path], cases: dict[str, list[EditCase]], quality: QualityConfig, judge_model: str,
                judge_pretrained: str | None, reader_dir: Path | None, seed: int, device: str, out_table: Path,
                out_features: Path, subjects: tuple[ToySubject | FolderSubject, ...] = (), unsafe_detector: str = "judge",
                nudenet_threshold: float = 0.6, reference: bool = True) -> None:
    """Score a model's generation directories, or a chunk of them (run_score_merge joins the
    chunks): only the first chunk computes the reference set's arrays (`reference`)."""
    judge = ClipJudge.load(judge_model, judge_pretrained, device=device)
    detector = None
    if unsafe_detector == "nudenet" and "unsafe" in cases:
        from ..judges.nudenet import NudityDetector

        detector = NudityDetector.load(threshold=nudenet_threshold)
    reader = None
    if reader_dir is not None:
        from ..toy.reader import AttributeReader

        reader = AttributeReader.load(reader_dir)
    table, features, ref = score_model(gen_dirs, cases, quality, judge, reader, seed, subjects, detector, reference)
    arrays = {"features": features, **({"reference": ref} if reference else {})}
    if quality.inception is not None:
        from ..metrics.inception import load_inception

        arrays["inception"], inception_reference = inception_of_model(
            table, quality, load_inception(quality.inception, device), seed)
        if reference:
            arrays["inception_reference"] = inception_reference
    save_arrays(out_features, **arrays)
    write_frame(table, out_table)


def run_score_merge(tables: list[Path], features: list[Path], out_table: Path, out_features: Path) -> None:
    """A model's score table and arrays from its chunks' (run_scoring on consecutive runs of its
    generation directories, in order): the files the unsplit job writes."""
    chunks = []
    for path in features:
        with np.load(path) as z:
            chunks.append({key: z[key] for key in z.files})
    table = merge_score_tables([pd.read_parquet(t) for t in tables], [len(c["features"]) for c in chunks])
    save_arrays(out_features, **merge_score_arrays(chunks))
    write_frame(table, out_table)
    log.info("merged %d score chunks: %d image uses", len(tables), len(table))


def image_counts(evaluation: dict) -> dict[str, int]:
    """Images per prompt of each probe role, as the generation jobs made them (the config's
    `evaluation` block): the first so many images of each prompt are what a metric reads."""
    n, n_check = evaluation["images_per_prompt"], images_per_check(evaluation)
    return {**probe_counts(evaluation["images_per_source"], n, n_check), "subject": n_check, "snapshot": n,
            "quality": evaluation["quality"]["images_per_caption"]}


def load_model_scores(table: Path, features: Path, scorer: str, samples: int, seed: int,
                      counts: dict[str, int] | None = None) -> ModelScores:
    with np.load(features) as z:
        feats, ref = z["features"], z["reference"]
        inception = (z["inception"], fit_inception_references(z["inception_reference"])) if "inception" in z else None
    return ModelScores(pd.read_parquet(table), feats, fit_references(ref), scorer, samples, seed, counts,
                       *(inception or (None, None)))


@dataclass(frozen=True)
class StudySpec:
    """What the tables cover, as the workflow's config selects it."""

    models: dict[str, str]  # name -> family
    cells: list[GridCell]
    subjects: dict[str, dict]  # name -> subject fields (make_subject)
    finetune_steps: dict[str, dict[str, int]]  # model -> fine-tuner -> training steps
    reedit: tuple[str, ...]  # fine-tuners whose edited_ft states are re-edited
    transfer: tuple[str, ...]  # adapter fine-tuners applied to edited models
    min_effect: float | dict = 0.0  # evaluation.min_effect
    min_ft_fidelity: float = 0.0  # evaluation.min_ft_fidelity
    min_target_reach: float = 0.0  # evaluation.min_target_reach


def build_cells(spec: StudySpec, cases: dict[str, list[EditCase]]) -> list[Cell]:
    by_key = {(c.task, c.name): c for task_cases in cases.values() for c in task_cases}
    out = []
    for grid in spec.cells:
        case = by_key[(grid.task, grid.edit)]
        out.append(Cell(grid, spec.models[grid.model], case, relation(make_subject(spec.subjects[grid.subject]), case)))
    return out


def by_seed_replicates(by_seed: list[dict]) -> pd.DataFrame:
    """The per-seed table with each seed's bootstrap replicates of its retention and the edited
    model's of the metric (lists): what a paired comparison of two editors on the same cells and
    seeds needs (compare.py)."""
    frame = table_frame(by_seed, SEED_COLUMNS)
    frame["replicates"] = [np.asarray(r["_replicates"], dtype=float).tolist() for r in by_seed]
    frame["edited_replicates"] = [np.asarray(r["_edited_replicates"], dtype=float).tolist() for r in by_seed]
    return frame


def run_study(scores: dict[str, ModelScores], spec: StudySpec, cases: dict[str, list[EditCase]], out_dir: Path,
              summary_path: Path) -> dict[str, pd.DataFrame]:
    from tqdm.auto import tqdm

    rows, curves, reedits, transfers = [], [], [], []
    cells = build_cells(spec, cases)
    rule = SeedRule(spec.min_ft_fidelity, spec.min_target_reach)
    for cell in tqdm(cells, desc="persistence", mininterval=5.0):
        s = scores[cell.model]
        rows += persistence_rows(s, cell, spec.min_effect, rule)
        curves += curve_rows(s, cell, spec.finetune_steps[cell.model][cell.finetuner], spec.min_effect, rule)
        if cell.finetuner in spec.reedit:
            reedits += reedit_rows(s, cell, spec.min_effect, rule)
        if cell.finetuner in spec.transfer:
            transfers += transfer_rows(s, cell, spec.min_effect, rule)
    # Judge validity needs the reader's ground truth, which only the toy world has.
    validity = pd.DataFrame([v for model, s in scores.items() if s.table["reader_hit"].notna().any()
                             for v in judge_validity(s.table, model)],
                            columns=["model", "task", "agreement", "n_images"])
    finetune_quality = pd.DataFrame([r for model, s in scores.items() for r in finetune_quality_rows(s, model)])
    by_seed = [seed for r in rows for seed in r["_by_seed"]]
    frames = {
        "persistence": table_frame(rows, COLUMNS),
        "persistence_by_seed": table_frame(by_seed, SEED_COLUMNS),
        "finetune_quality": finetune_quality,
        "curves": pd.DataFrame(curves),
        "reedit": pd.DataFrame(reedits),
        "transfer": pd.DataFrame(transfers),
        "judge_validity": validity,
    }
    write_frame(frames["persistence"], out_dir / "persistence.csv")
    write_frame(frames["persistence"], out_dir / "persistence.parquet")
    write_frame(frames["persistence_by_seed"], out_dir / "persistence_by_seed.csv")
    write_frame(by_seed_replicates(by_seed), out_dir / "persistence_by_seed.parquet")
    for name in ("curves", "reedit", "transfer", "judge_validity", "finetune_quality"):
        write_frame(frames[name], out_dir / f"{name}.csv")
    scorer = next(iter(scores.values())).scorer
    samples = next(iter(scores.values())).samples
    with atomic_path(summary_path) as tmp:
        tmp.write_text(write_summary(rows, validity, scorer, samples, finetune_quality, spec.min_ft_fidelity,
                                     spec.min_target_reach))
    log.info("persistence table: %d rows over %d cells", len(rows), len(cells))
    return frames


def state_images(table: pd.DataFrame, state: str, prompt: str, k: int) -> np.ndarray | None:
    rows = table[(table["state"] == state) & (table["step"] == -1) & (table["prompt"] == prompt)]
    rows = rows.drop_duplicates("index").sort_values("index").head(k)
    if rows.empty:
        return None
    return np.concatenate([load_images(Path(d), g["path"].tolist()) for d, g in rows.groupby("dir", sort=False)])


def case_grid_rows(table: pd.DataFrame, editor: str, case: EditCase, finetuners: dict[str, int], subject: str,
                   k: int) -> list[tuple[str, np.ndarray]]:
    """The same noise seeds of the case's source prompt across base, edited and fine-tuned states
    (`finetuners`: fine-tuner -> the fine-tune seed shown)."""
    edited = State.edited(editor, case.task, case.name)
    states = [("base", BASE.name), ("edited", edited.name)]
    for ft, seed in finetuners.items():
        states += [(f"base_ft {ft}", BASE.finetuned(ft, subject, seed).name),
                   (f"edited_ft {ft}", edited.finetuned(ft, subject, seed).name)]
    out = []
    for label, state in states:
        images = state_images(table, state, case.source.prompt, k)
        if images is not None:
            out.append((label, images))
    return out


def primary_table(persistence: pd.DataFrame) -> pd.DataFrame:
    return persistence[persistence["metric"] == persistence["task"].map(PRIMARY)]


def stated_cells(persistence: pd.DataFrame) -> pd.DataFrame:
    """The cells the summary states a retention for: primary metric, established effect, at
    least one fine-tune seed kept (the per-seed fidelity and target filters)."""
    prim = primary_table(persistence)
    return prim[[states_retention(r) for r in prim.to_dict("records")]]


def weights_with_retention(weights: pd.DataFrame, persistence: pd.DataFrame) -> pd.DataFrame:
    """The weight diagnostic of every (edit, fine-tune) pair beside its behavioural retention."""
    prim = primary_table(persistence).rename(columns={"ft_data": "subject"})
    keys = ["model", "editor", "task", "edit", "finetuner", "subject"]
    return weights.merge(prim[keys + ["metric", "retention", "ci_low", "ci_high"]], on=keys, how="left")


def run_figures(persistence: pd.DataFrame, curves: pd.DataFrame, weights: pd.DataFrame,
                score_tables: dict[str, pd.DataFrame], cells: list[GridCell], cases: dict[str, list[EditCase]],
                finetuners: dict[str, dict[str, int]], k: int, out: dict[str, Path]) -> None:
    """`finetuners`: model -> fine-tuner -> the fine-tune seed its image grids show."""
    from ..io import atomic_dir
    from . import plots

    # What the summary states, and nothing else: a cell without an established effect, or whose
    # every seed left it, has no retention to plot (a ratio of noise).
    stated = stated_cells(persistence)
    plots.retention_heatmap(stated, out["heatmap"])
    plots.retention_forest(stated, out["forest"])
    keys = ["model", "editor", "task", "edit", "finetuner", "ft_data"]
    plots.retention_curves(curves.merge(stated[keys], on=keys), out["curves"])
    merged = weights_with_retention(weights, persistence)
    write_frame(merged, out["weights_table"])
    plots.weights_vs_retention(merged[merged["module"] == "(all)"], out["weights"])
    by_key = {(c.task, c.name): c for task_cases in cases.values() for c in task_cases}
    seen = set()
    with atomic_dir(out["grids"]) as tmp:
        for c in cells:
            key = (c.model, c.editor, c.task, c.edit, c.subject)
            if key in seen:
                continue
            seen.add(key)
            rows = case_grid_rows(score_tables[c.model], c.editor, by_key[(c.task, c.edit)], finetuners[c.model],
                                  c.subject, k)
            if rows:
                plots.state_grid(rows, tmp / f"{'.'.join(key)}.png")
