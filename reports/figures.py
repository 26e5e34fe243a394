"""Figures of a study, saved as PNG and SVG; a figure whose data is absent is skipped with a reason.

Uses matplotlib's object API (no pyplot state) with seaborn drawing into given axes, so making a
report changes no global plotting settings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from objbench.reports.load import AXIS_COLUMN, NO_LAYER, StudyData

PROBE_METRICS = ("probe_acc", "selectivity")
_STYLE = sns.axes_style("whitegrid")


@dataclass(frozen=True)
class SavedFigure:
    """A figure written to disk, with the caption the report prints under it."""

    name: str
    title: str
    caption: str
    png: Path
    svg: Path


def make_figures(
    data: StudyData, final: pd.DataFrame, final_summary: pd.DataFrame, out_dir: Path
) -> tuple[list[SavedFigure], list[str]]:
    """Draw every figure that has data; return the saved ones and one note per skipped one.

    `final` holds the last-evaluation rows of finished runs, `final_summary` their summary.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    # one color per arm in every figure
    arms = [_label(arm) for arm in sorted(data.runs["arm"].unique())]
    palette = dict(zip(arms, sns.color_palette(n_colors=len(arms))))
    plots: list[tuple[str, str, Callable[[], tuple[Figure | None, str]]]] = [
        ("learning_curves", "Validation loss", lambda: _learning_curves(data, palette)),
        ("probe_vs_budget", "Probe accuracy over training",
         lambda: _probe_vs_budget(data, palette)),
        ("probe_layers", "Probes per layer", lambda: _probe_layers(final, palette)),
        ("phenomena", "Minimal-pair accuracy by phenomenon", lambda: _phenomena(final_summary)),
        ("summary", "Final results", lambda: _summary(final_summary, palette)),
    ]
    saved, skipped = [], []
    for name, title, draw in plots:
        png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
        with matplotlib.rc_context(_STYLE):
            figure, caption = draw()
        if figure is None:
            skipped.append(f"{title}: skipped, {caption}")
            for stale in (png, svg):  # from an earlier report, when the data was still there
                stale.unlink(missing_ok=True)
            continue
        figure.savefig(png, dpi=110)
        figure.savefig(svg, metadata={"Date": None})
        saved.append(SavedFigure(name, title, caption, png, svg))
    return saved, skipped


def _label(text: object) -> str:
    """Data text safe for matplotlib: `$` starts mathtext, a leading `_` hides a legend entry."""
    text = str(text).replace("$", r"\$")
    return f" {text}" if text.startswith("_") else text


def _with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(arm=frame["arm"].map(_label))


def _aligned_x(frame: pd.DataFrame, x: str) -> pd.DataFrame:
    """Put every seed's k-th evaluation at the seeds' mean budget, so seeds can be averaged.

    On the flops axis seeds reach an evaluation point at slightly different values.
    """
    point = frame.groupby(["arm", "seed"])[x].rank(method="dense")
    return frame.assign(**{x: frame.groupby([frame["arm"], point])[x].transform("mean")})


def _panels(count: int, width: float = 4.5, height: float = 3.4) -> tuple[Figure, list]:
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    figure = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for extra in axes[count:]:
        extra.set_visible(False)
    return figure, list(axes[:count])


def _learning_curves(data: StudyData, palette: dict) -> tuple[Figure | None, str]:
    metrics = data.metrics
    x = AXIS_COLUMN[data.budget_axis]
    if metrics.empty or "val_loss" not in metrics or x not in metrics:
        return None, f"no val_loss with {x} in metrics.jsonl"
    done = data.runs.loc[data.runs["state"] == "done", ["arm", "seed"]]
    curves = metrics.merge(done, on=["arm", "seed"]).dropna(subset=["val_loss", x])
    if curves.empty:
        return None, "no finished run logged val_loss"
    curves = _with_labels(_aligned_x(curves, x))
    objectives = sorted(curves["objective"].fillna("").astype(str).unique())
    figure, axes = _panels(len(objectives))
    for ax, objective in zip(axes, objectives):
        sns.lineplot(data=curves[curves["objective"] == objective], x=x, y="val_loss", hue="arm",
                     palette=palette, errorbar="sd", ax=ax)
        ax.set_title(_label(objective or "objective unknown"))
        ax.set_xlabel(data.budget_axis)
    return figure, (
        f"Validation loss against {data.budget_axis}, one panel per objective: losses of"
        " different objectives predict different targets and are not comparable. Line: mean"
        " over seeds; band: ±1 standard deviation."
    )


def _probe_vs_budget(data: StudyData, palette: dict) -> tuple[Figure | None, str]:
    rows = data.done_results
    rows = rows[(rows["metric"] == "probe_acc") & (rows["layer"] != NO_LAYER)]
    if rows["budget_value"].nunique() < 2:
        return None, "probe_acc was evaluated at fewer than two budget points"
    # one number per run and evaluation point: the mean over layers, which selects nothing
    per_run = (rows.groupby(["arm", "seed", "task", "pooling", "budget_value"], as_index=False)
               ["value"].mean())
    per_run = _with_labels(_aligned_x(per_run, "budget_value"))
    tasks = sorted(per_run["task"].unique())
    figure, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        part = per_run[per_run["task"] == task]
        style = "pooling" if part["pooling"].nunique() > 1 else None
        sns.lineplot(data=part, x="budget_value", y="value", hue="arm", style=style,
                     palette=palette, errorbar="sd", marker="o", ax=ax)
        ax.set_title(_label(task))
        ax.set_xlabel(data.budget_axis)
        ax.set_ylabel("probe_acc (mean over layers)")
    return figure, (
        f"Probe accuracy, averaged over layers, at each evaluation point against"
        f" {data.budget_axis}. Line: mean over seeds; band: ±1 standard deviation."
    )


def _probe_layers(final: pd.DataFrame, palette: dict) -> tuple[Figure | None, str]:
    rows = final[final["metric"].isin(PROBE_METRICS) & (final["layer"] != NO_LAYER)]
    if rows.empty:
        return None, "no per-layer probe results"
    rows = _with_labels(rows)
    panels = sorted(rows.groupby(["metric", "task"]).groups)
    figure, axes = _panels(len(panels))
    for ax, (metric, task) in zip(axes, panels):
        part = rows[(rows["metric"] == metric) & (rows["task"] == task)]
        style = "pooling" if part["pooling"].nunique() > 1 else None
        sns.lineplot(data=part, x="layer", y="value", hue="arm", style=style, palette=palette,
                     errorbar="sd", marker="o", ax=ax)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(_label(f"{task}: {metric}"))
        ax.set_ylabel(_label(metric))
    return figure, (
        "Probe results at the final evaluation per layer (selectivity = probe minus control"
        " task accuracy). Line: mean over seeds; band: ±1 standard deviation."
    )


def _phenomena(summary: pd.DataFrame) -> tuple[Figure | None, str]:
    rows = summary[summary["group"] != ""]
    if rows.empty:
        return None, "no results broken down by phenomenon (group)"
    panels = sorted(rows.groupby(["task", "metric"]).groups)
    width = max(4.5, 0.45 * rows["group"].nunique() + 2)
    height = max(2.5, 0.45 * rows["arm"].nunique() + 1.5)
    figure = Figure(figsize=(width, height * len(panels)), layout="constrained")
    axes = figure.subplots(len(panels), 1, squeeze=False).ravel()
    for ax, (task, metric) in zip(axes, panels):
        part = rows[(rows["task"] == task) & (rows["metric"] == metric)]
        grid = part.pivot_table(index="arm", columns="group", values="mean")
        grid.index = grid.index.map(_label)
        grid.columns = grid.columns.map(_label)
        sns.heatmap(grid, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, ax=ax,
                    cbar_kws={"label": _label(metric)})
        ax.set_title(_label(f"{task}: {metric}"))
        ax.set_xlabel("phenomenon")
        ax.tick_params(axis="x", labelrotation=45)
    return figure, "Minimal-pair accuracy at the final evaluation, mean over seeds."


def _summary(summary: pd.DataFrame, palette: dict) -> tuple[Figure | None, str]:
    rows = summary[(summary["group"] == "") & (summary["layer"] == NO_LAYER)]
    if rows.empty:
        return None, "no final results without a layer or group"
    panels = sorted(rows.groupby(["task", "metric", "split", "pooling"]).groups)
    figure, axes = _panels(len(panels), width=3.6, height=3.0)
    for ax, (task, metric, split, pooling) in zip(axes, panels):
        part = rows[(rows["task"] == task) & (rows["metric"] == metric)
                    & (rows["split"] == split) & (rows["pooling"] == pooling)]
        for position, row in enumerate(part.itertuples()):
            error = np.array([[row.mean - row.ci_low], [row.ci_high - row.mean]])
            ax.errorbar(position, row.mean, yerr=None if np.isnan(error).any() else error,
                        fmt="o", capsize=4, color=palette[_label(row.arm)])
        ax.set_xticks(range(len(part)), [_label(arm) for arm in part["arm"]], rotation=30,
                      ha="right")
        ax.set_title(_label(" ".join(p for p in (task, split, pooling) if p)))
        ax.set_ylabel(_label(metric))
    return figure, (
        "Every final result without a layer or phenomenon breakdown (those are in the figures"
        " above). Point: mean over seeds; bar: 95% t interval (absent with one seed)."
    )
