"""Figures of the report: retention heatmaps, forest plots of every cell's retention, retention-over-steps
curves, image grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..images import grid as image_grid
from ..io import atomic_dir, atomic_path
from .summary import KEEP, LOSE


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (jobs have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> None:
    plt = _pyplot()

    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip("."), dpi=120, bbox_inches="tight")
    plt.close(fig)


def heatmap_panels(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per task (one metric each): mean retention per (model, editor) row and fine-tuner column,
    over the task's edits with a stated retention. Every panel has the same rows and columns (a
    task some editor cannot do stays blank)."""
    rows = pd.MultiIndex.from_frame(table[["model", "editor"]].drop_duplicates().sort_values(["model", "editor"]))
    cols = sorted(table["finetuner"].unique())
    return {task: table[table["task"] == task].pivot_table(index=["model", "editor"], columns="finetuner",
                                                          values="retention", aggfunc="mean", dropna=False)
            .reindex(index=rows, columns=cols) for task in sorted(table["task"].unique())}


def colour_range(values: np.ndarray) -> tuple[float, float]:
    """[0, 1], widened to every value shown: retention past 1 (a fine-tune that completed an
    erasure) or below 0 (one that reversed the edit) keeps its own colour, never the end's."""
    finite = values[np.isfinite(values)]
    return (min(0.0, finite.min()), max(1.0, finite.max())) if finite.size else (0.0, 1.0)


def retention_heatmap(table: pd.DataFrame, out: Path) -> None:
    """One panel per task: rows model x editor, columns fine-tuner, colour = mean primary
    retention of the cells `table` holds (the summary's stated cells, study.stated_cells)."""
    plt = _pyplot()

    if table.empty:
        return _nothing_to_show(out, "No cell states a retention: no heatmap to show.")
    panels = heatmap_panels(table)
    n_rows = len(next(iter(panels.values())))
    vmin, vmax = colour_range(np.concatenate([p.to_numpy(dtype=float).ravel() for p in panels.values()]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 2, 0.5 * n_rows + 2.2), squeeze=False,
                             sharey=True)
    for ax, (task, piv) in zip(axes[0], panels.items()):
        sub = table[table["task"] == task]
        im = ax.imshow(piv.to_numpy(dtype=float), vmin=vmin, vmax=vmax, cmap="viridis", aspect="auto")
        ax.set_xticks(range(piv.shape[1]), piv.columns, rotation=40, ha="right")
        ax.set_yticks(range(piv.shape[0]), [f"{m} / {e}" for m, e in piv.index])
        for (i, j), v in np.ndenumerate(piv.to_numpy(dtype=float)):
            ax.text(j, i, "–" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    color="white" if not np.isnan(v) and v < (vmin + vmax) / 2 else "black", fontsize=8)
        ax.set_title(f"{task} ({sub['metric'].iloc[0]})")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="retention")
    _save(fig, out)


def _nothing_to_show(out: Path, text: str) -> None:
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(5, 1.5))
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.axis("off")
    _save(fig, out)


FT_MARKERS = "osD^v<>p"


def forest_panels(table: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (model, task): its cells, one row each, grouped by editor, then fine-tuner."""
    order = ["editor", "finetuner", "edit", "ft_data"]
    return {(model, task): rows.sort_values(order).reset_index(drop=True)
            for (model, task), rows in table.groupby(["model", "task"], sort=True)}


def forest_plot(rows: pd.DataFrame, title: str, out: Path) -> None:
    """Each cell's retention with its interval, one line per cell (editor by colour, fine-tuner
    by marker); the axis reaches every interval, 0 and 1 marked, and the keep/lose bars dashed."""
    plt = _pyplot()

    editors = sorted(rows["editor"].unique())
    colours = dict(zip(editors, plt.get_cmap("tab10").colors))
    markers = dict(zip(sorted(rows["finetuner"].unique()), FT_MARKERS))
    y = np.arange(len(rows))[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(rows) + 1.6))
    for (editor, ft), sub in rows.groupby(["editor", "finetuner"]):
        at = y[sub.index]
        err = np.vstack([sub["retention"] - sub["ci_low"], sub["ci_high"] - sub["retention"]])
        ax.errorbar(sub["retention"], at, xerr=err, fmt=markers[ft], color=colours[editor], ms=4, capsize=2, lw=1,
                    label=f"{editor} / {ft}")
    low, high = colour_range(rows[["ci_low", "ci_high", "retention"]].to_numpy(dtype=float).ravel())
    ax.set_xlim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    for x, style in ((0, "-"), (1, "-"), (LOSE, "--"), (KEEP, "--")):  # the summary's verdict bars
        ax.axvline(x, color="grey", lw=0.6, ls=style)
    ax.set_yticks(y, [f"{r.edit} · {r.ft_data}" for r in rows.itertuples()], fontsize=6)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(f"retention of {rows['metric'].iloc[0]} (95 % interval)")
    ax.set_title(title)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, out)


def retention_forest(table: pd.DataFrame, out_dir: Path) -> list[tuple[str, str]]:
    """One forest plot per (model, task) of the cells `table` holds, as `<model>.<task>.png`
    in `out_dir`; returns the panels drawn."""
    panels = forest_panels(table)
    with atomic_dir(out_dir) as tmp:
        for (model, task), rows in panels.items():
            forest_plot(rows, f"{model}: {task}", tmp / f"{model}.{task}.png")
        if not panels:
            _nothing_to_show(tmp / "none.png", "No cell states a retention: no forest plot to show.")
    return list(panels)


def retention_curves(curves: pd.DataFrame, out: Path) -> None:
    """Retention of the primary metric over fine-tuning steps, one panel per (model, task)."""
    plt = _pyplot()

    panels = curves[["model", "task"]].drop_duplicates().to_records(index=False) if len(curves) else []
    if not len(panels):
        return _nothing_to_show(out, "No edit took: no retention curve to show.")
    cols = min(4, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, (model, task) in zip(axes.flat, panels):
        sub = curves[(curves["model"] == model) & (curves["task"] == task)]
        for (editor, ft), line in sub.groupby(["editor", "finetuner"]):
            line = line.sort_values("step")
            ax.plot(line["step"], line["retention"], marker="o", label=f"{editor} / {ft}")
            ax.fill_between(line["step"], line["ci_low"], line["ci_high"], alpha=0.12)
        ax.axhline(0, color="grey", lw=0.5)
        ax.axhline(1, color="grey", lw=0.5, ls=":")
        ax.set_ylim(-0.3, 1.6)
        ax.set_title(f"{model}: {task}")
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("retention")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, out)


def state_grid(rows: list[tuple[str, np.ndarray]], out: Path, scale: int = 3) -> None:
    """An image grid: one row per state (label, images of the same seeds), with labels."""
    plt = _pyplot()

    n = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.45 * n * scale / 3 + 2.5, 0.5 * len(rows) * scale / 3 + 0.5),
                             squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], rows):
        ax.imshow(image_grid(images, 1, len(images)))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    _save(fig, out)


def weights_vs_retention(frame: pd.DataFrame, out: Path) -> None:
    """Share of the edit's weight update removed by fine-tuning against behavioural retention."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    markers = dict(zip(sorted(frame["editor"].unique()), "os^Dv"))
    for (editor, ft), sub in frame.groupby(["editor", "finetuner"]):
        ax.scatter(sub["share_removed"].fillna(0.0), sub["retention"], marker=markers[editor], label=f"{editor} / {ft}",
                   alpha=0.8)
    ax.set_xlabel("share of the edit's weight update removed by fine-tuning")
    ax.set_ylabel("behavioural retention (primary metric)")
    ax.axhline(1, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.legend(fontsize=6, ncol=2)
    _save(fig, out)
