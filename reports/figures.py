"""Figures of a study, saved as PNG and SVG; a figure whose data is absent is skipped with a reason.

Uses matplotlib's object API (no pyplot state) with seaborn drawing into given axes, so making a
report changes no global plotting settings.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from objbench.reports.keys import arm_order, base_metric, baseline_name, baselines_of, describe, key_rows
from objbench.reports.load import AXIS_COLUMN, NO_LAYER, StudyData

# per-layer metrics drawn as curves, each with its baselines as reference lines
LAYER_METRICS = ("probe_acc", "probe_acc_ambiguous", "probe_spearman")
SERIES_COLUMNS = ["panel", "role", "task", "metric", "arm", "objective"]
# the context task's loss with k_left / k_right tokens kept (`objbench.tasks.context`)
CONTEXT_CELL = re.compile(r"^loss_l(\d+|all)_r(\d+|all)$")
_STYLE = sns.axes_style("whitegrid")


@dataclass(frozen=True)
class SavedFigure:
    """A figure written to disk, with the caption the report prints under it and what it plots.

    ``series`` has one row per plotted series (`SERIES_COLUMNS`): its panel, its role
    ("result" for what arms scored, "baseline" for a reference line), and what it shows.
    """

    name: str
    title: str
    caption: str
    png: Path
    svg: Path
    series: pd.DataFrame


@dataclass
class Drawn:
    """A drawn figure before saving: the figure, its caption, and the series it plots."""

    figure: Figure
    caption: str
    series: list[dict]


def make_figures(data: StudyData, final: pd.DataFrame, final_summary: pd.DataFrame,
                 primary: pd.DataFrame, out_dir: Path) -> tuple[list[SavedFigure], list[str]]:
    """Draw every figure that has data; return the saved ones and one note per skipped one.

    `final` holds the last-evaluation rows of finished runs, `final_summary` their summary,
    `primary` the primary result keys.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    # one color per arm in every figure, in the order of the report's tables
    arms = [_label(arm) for arm in arm_order(data, set(data.runs["arm"]))]
    palette = dict(zip(arms, sns.color_palette(n_colors=len(arms))))
    plots: list[tuple[str, str, Callable[[], Drawn | str]]] = [
        ("primary", "Primary results", lambda: _primary(final_summary, primary, palette)),
        ("primary_vs_budget", "Primary results over training",
         lambda: _primary_vs_budget(data, primary, palette)),
        ("probe_layers", "Probes per layer", lambda: _probe_layers(final, final_summary, palette)),
        ("learning_curves", "Validation loss", lambda: _learning_curves(data, palette)),
        ("data_use", "Repeated data", lambda: _data_use(data, primary, palette)),
        ("phenomena", "Minimal-pair accuracy by phenomenon", lambda: _phenomena(final_summary)),
        ("context", "Context usage", lambda: _context(final_summary, palette)),
    ]
    saved, skipped = [], []
    for name, title, draw in plots:
        png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
        with matplotlib.rc_context(_STYLE):
            drawn = draw()
        if isinstance(drawn, str):
            skipped.append(f"{title}: skipped, {drawn}")
            for stale in (png, svg):  # from an earlier report, when the data was still there
                stale.unlink(missing_ok=True)
            continue
        drawn.figure.savefig(png, dpi=110)
        drawn.figure.savefig(svg, metadata={"Date": None})
        saved.append(SavedFigure(name, title, drawn.caption, png, svg,
                                 pd.DataFrame(drawn.series, columns=SERIES_COLUMNS)))
    return saved, skipped


def _label(text: object) -> str:
    """Data text safe for matplotlib: `$` starts mathtext, a leading `_` hides a legend entry."""
    text = str(text).replace("$", r"\$")
    return f" {text}" if text.startswith("_") else text


def _present(palette: dict, rows: pd.DataFrame) -> list[str]:
    """The arms of ``rows`` in the palette's (the report's) order."""
    return [arm for arm in palette if arm in set(rows["arm"])]


def _title(text: str) -> str:
    """A panel title wrapped to the panel's width, so it never runs into its neighbour."""
    return "\n".join(textwrap.wrap(_label(text), 42))


def _with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(arm=frame["arm"].map(_label))


def _aligned_x(frame: pd.DataFrame, x: str) -> pd.DataFrame:
    """Put every seed's k-th evaluation at the seeds' mean budget, so seeds can be averaged.

    On the flops axis seeds reach an evaluation point at slightly different values.
    """
    point = frame.groupby(["arm", "seed"])[x].rank(method="dense")
    return frame.assign(**{x: frame.groupby([frame["arm"], point])[x].transform("mean")})


def _panels(count: int, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list]:
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    figure = Figure(figsize=(width * cols + 1.6, height * rows), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for extra in axes[count:]:
        extra.set_visible(False)
    return figure, list(axes[:count])


def _legend_outside(figure: Figure, axes: list) -> None:
    """One legend for the figure, right of every panel, never over data."""
    handles, labels = {}, []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if labels:
        figure.legend([handles[l] for l in labels], labels, loc="outside right upper", fontsize="small")


def _baseline_lines(ax, rows: pd.DataFrame, panel: str, series: list[dict]) -> None:
    """Dashed horizontal reference lines, one per baseline in ``rows`` (baselines_of)."""
    for (baseline, metric, task), part in rows.groupby(["baseline", "metric", "task"]):
        value = float(part["mean"].mean())
        ax.axhline(value, color="0.35", linestyle="--", linewidth=1, label=_label(f"{baseline} (baseline)"))
        ax.annotate(_label(baseline), (1.0, value), xycoords=("axes fraction", "data"), xytext=(-2, 2),
                    textcoords="offset points", ha="right", fontsize="x-small", color="0.35")
        series.append({"panel": panel, "role": "baseline", "task": task, "metric": metric,
                       "arm": None, "objective": None})


def _result_series(panel: str, rows: pd.DataFrame, series: list[dict]) -> None:
    for (task, metric, arm), part in rows.groupby(["task", "metric", "arm"]):
        objective = part["objective"].iloc[0] if "objective" in part else None
        series.append({"panel": panel, "role": "result", "task": task, "metric": metric,
                       "arm": arm, "objective": objective})


def _primary(summary: pd.DataFrame, primary: pd.DataFrame, palette: dict) -> Drawn | str:
    keys = [k for k in primary.to_dict("records") if not key_rows(summary, k).empty]
    if not keys:
        return "no primary result was reported"
    figure, axes = _panels(len(keys), width=3.8)
    series: list[dict] = []
    for ax, key in zip(axes, keys):
        rows = key_rows(summary, key)
        rows = rows.assign(order=rows["arm"].map(_label).map(list(palette).index)).sort_values("order")
        panel = describe(key)
        for position, row in enumerate(rows.itertuples()):
            error = np.array([[row.mean - row.ci_low], [row.ci_high - row.mean]])
            ax.errorbar(position, row.mean, yerr=None if np.isnan(error).any() else error, fmt="o",
                        capsize=4, color=palette[_label(row.arm)], label=_label(row.arm))
        ax.set_xticks(range(len(rows)), [_label(a) for a in rows["arm"]], rotation=30, ha="right")
        ax.set_xlim(-0.5, len(rows) - 0.5)
        _result_series(panel, rows.assign(objective=None), series)
        _baseline_lines(ax, baselines_of(summary, key["task"], key["metric"], key["group"]), panel, series)
        ax.set_title(_title(panel), fontsize="small")
        ax.set_ylabel(_label(key["metric"]))
    _legend_outside(figure, axes)
    return Drawn(figure, "Each primary result at the final evaluation. Point: mean over seeds; bar:"
                 " 95% t interval (absent with one seed); dashed lines: baselines that read the"
                 " same items without the encoder (they are the same for every arm).", series)


def _primary_vs_budget(data: StudyData, primary: pd.DataFrame, palette: dict) -> Drawn | str:
    rows = data.done_results.merge(primary, on=list(primary.columns))
    if rows["budget_value"].nunique() < 2:
        return "the primary results were evaluated at fewer than two budget points (probe_at)"
    rows = _with_labels(_aligned_x(rows, "budget_value"))
    keys = [k for k in primary.to_dict("records") if not key_rows(rows, k).empty]
    figure, axes = _panels(len(keys))
    series: list[dict] = []
    for ax, key in zip(axes, keys):
        part, panel = key_rows(rows, key), describe(key)
        sns.lineplot(data=part, x="budget_value", y="value", hue="arm", hue_order=_present(palette, part),
                     palette=palette,
                     errorbar=("ci", 95), marker="o", ax=ax)
        _result_series(panel, part, series)
        final = data.done_results[data.done_results["final"]]
        bases = baselines_of(final, key["task"], key["metric"], key["group"]).rename(columns={"value": "mean"})
        _baseline_lines(ax, bases, panel, series)
        ax.set_title(_title(panel), fontsize="small")
        ax.set_xlabel(data.budget_axis)
        ax.set_ylabel(_label(key["metric"]))
    _legend_outside(figure, axes)
    return Drawn(figure, f"Primary results at each probe point against {data.budget_axis}. Line:"
                 " mean over seeds; band: 95% interval of the mean; dashed lines: baselines.", series)


def _probe_layers(final: pd.DataFrame, summary: pd.DataFrame, palette: dict) -> Drawn | str:
    rows = final[final["metric"].isin(LAYER_METRICS) & (final["layer"] != NO_LAYER)]
    if rows.empty:
        return "no per-layer probe results"
    rows = _with_labels(rows)
    panels = sorted(rows.groupby(["task", "metric"]).groups)
    figure, axes = _panels(len(panels))
    series: list[dict] = []
    for ax, (task, metric) in zip(axes, panels):
        part, panel = rows[(rows["task"] == task) & (rows["metric"] == metric)], f"{task}: {metric}"
        style = "pooling" if part["pooling"].nunique() > 1 else None
        sns.lineplot(data=part, x="layer", y="value", hue="arm", hue_order=_present(palette, part),
                     style=style, palette=palette,
                     errorbar=("ci", 95), marker="o", ax=ax)
        _result_series(panel, part, series)
        _baseline_lines(ax, baselines_of(summary, task, metric), panel, series)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(_title(panel), fontsize="small")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel(_label(metric))
    _legend_outside(figure, axes)
    return Drawn(figure, "Probe results per layer at the final evaluation. A curve that falls after"
                 " layer 0 means the contextual layers hold less than the embeddings. Line: mean"
                 " over seeds; band: 95% interval of the mean; dashed lines: baselines.", series)


def _learning_curves(data: StudyData, palette: dict) -> Drawn | str:
    metrics = data.metrics
    x = AXIS_COLUMN[data.budget_axis]
    if metrics.empty or "val_loss" not in metrics or x not in metrics:
        return f"no val_loss with {x} in metrics.jsonl"
    done = data.runs.loc[data.runs["state"] == "done", ["arm", "seed"]]
    curves = metrics.merge(done, on=["arm", "seed"]).dropna(subset=["val_loss", x])
    if curves.empty:
        return "no finished run logged val_loss"
    curves = _with_labels(_aligned_x(curves, x))
    objectives = sorted(curves["objective"].fillna("").astype(str).unique())
    figure, axes = _panels(len(objectives))
    series: list[dict] = []
    for ax, objective in zip(axes, objectives):
        part, panel = curves[curves["objective"] == objective], objective or "objective unknown"
        sns.lineplot(data=part, x=x, y="val_loss", hue="arm", hue_order=_present(palette, part),
                     palette=palette, errorbar="sd", ax=ax)
        _result_series(panel, part.assign(task="val_loss", metric="loss"), series)
        ax.set_title(_title(panel))
        ax.set_xlabel(data.budget_axis)
    _legend_outside(figure, axes)
    return Drawn(figure, (
        f"Validation loss against {data.budget_axis}, one panel per objective: losses of"
        " different objectives predict different targets and are not comparable. Line: mean"
        " over seeds; band: ±1 standard deviation."), series)


def _data_use(data: StudyData, primary: pd.DataFrame, palette: dict) -> Drawn | str:
    """Per objective, validation loss and each primary result against epochs over the training
    data, one line per arm: under a data_caps sweep, one line per cap."""
    curves = data.metrics.merge(data.runs.loc[data.runs["state"] == "done", ["arm", "seed"]])
    if not data.config.get("data_caps") or "epoch" not in curves:
        return "the study sweeps no data caps (data_caps)"
    curves = _at_mean_epochs(_with_labels(curves.dropna(subset=["val_loss", "epoch"]).query("epoch > 0")))
    probes = _with_labels(data.done_results.merge(primary, on=list(primary.columns)).dropna(subset=["epoch"]))
    probes = pd.concat([probes.iloc[:0], *(_at_mean_epochs(key_rows(probes, k)) for k in primary.to_dict("records"))])
    objectives = sorted(curves["objective"].astype(str).unique())
    keys = primary.to_dict("records")
    figure, axes = _panels(len(objectives) * (1 + len(keys)))
    series: list[dict] = []
    for i, objective in enumerate(objectives):
        panels = axes[i * (1 + len(keys)):(i + 1) * (1 + len(keys))]
        part = curves[curves["objective"] == objective]
        sns.lineplot(data=part, x="epoch", y="val_loss", hue="arm", hue_order=_present(palette, part),
                     palette=palette, errorbar="sd", ax=panels[0])
        _result_series(f"{objective}: val_loss", part.assign(task="val_loss", metric="loss"), series)
        panels[0].set_title(_title(f"{objective}: validation loss"), fontsize="small")
        for ax, key in zip(panels[1:], keys):
            rows = key_rows(probes[probes["objective"] == objective], key)
            if not rows.empty:
                sns.lineplot(data=rows, x="epoch", y="value", hue="arm", hue_order=_present(palette, rows),
                             palette=palette, errorbar=("ci", 95), marker="o", ax=ax)
                _result_series(f"{objective}: {describe(key)}", rows, series)
            ax.set_title(_title(f"{objective}: {describe(key)}"), fontsize="small")
            ax.set_ylabel(_label(key["metric"]))
    for ax in axes:
        ax.set_xscale("log")  # caps differ in epochs by orders of magnitude
    _legend_outside(figure, axes)
    return Drawn(figure, "Under a cap on unique training data, each objective's validation loss and"
                 " primary results against the passes it made over that data, on a log scale (one"
                 " line per arm and cap; band: ±1 sd for the loss, 95% interval of the mean for the"
                 " results).", series)


def _at_mean_epochs(rows: pd.DataFrame) -> pd.DataFrame:
    """Each run's k-th evaluation placed at the mean epoch of the arm's k-th evaluations: a
    FLOPs budget's points land a step apart from seed to seed, and unaligned seeds would be
    drawn as a zigzag instead of a mean with its band."""
    point = rows.sort_values("step", kind="stable").groupby(["arm", "seed"]).cumcount()
    return rows.assign(epoch=rows.groupby([rows["arm"], point])["epoch"].transform("mean"))


def _phenomena(summary: pd.DataFrame) -> Drawn | str:
    rows = summary[(summary["group"] != "") & (summary["split"] == "test")]
    if rows.empty:
        return "no results broken down by phenomenon (group)"
    rows = rows.assign(base=rows["metric"].map(base_metric), baseline=rows["metric"].map(baseline_name))
    panels = sorted(rows.groupby(["task", "base"]).groups)
    width = max(4.5, 0.45 * rows["group"].nunique() + 2)
    height = max(2.5, 0.4 * (rows["arm"].nunique() + rows["baseline"].nunique()) + 1.5)
    figure = Figure(figsize=(width, height * len(panels)), layout="constrained")
    axes = figure.subplots(len(panels), 1, squeeze=False).ravel()
    series: list[dict] = []
    for ax, (task, metric) in zip(axes, panels):
        part, panel = rows[(rows["task"] == task) & (rows["base"] == metric)], f"{task}: {metric}"
        models, bases = part[part["baseline"].isna()], part[part["baseline"].notna()]
        # a score variant (pooling, e.g. pll-word-l2r) is its own row, never averaged into the arm's
        models = models.assign(arm=models["arm"].where(models["pooling"] == "",
                                                       models["arm"] + " (" + models["pooling"] + ")"))
        grid = pd.concat([
            models.pivot_table(index="arm", columns="group", values="mean"),
            bases.pivot_table(index="baseline", columns="group", values="mean", aggfunc="mean")
                 .rename(index=lambda b: f"{b} (baseline)")])
        grid.index = grid.index.map(_label)
        grid.columns = grid.columns.map(_label)
        sns.heatmap(grid, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, ax=ax,
                    cbar_kws={"label": _label(metric)})
        _result_series(panel, models.assign(metric=metric, objective=None), series)
        series += [{"panel": panel, "role": "baseline", "task": task, "metric": m, "arm": None,
                    "objective": None} for m in sorted(set(bases["metric"]))]
        ax.set_title(_title(panel))
        ax.set_xlabel("phenomenon")
        ax.set_ylabel("")
        ax.tick_params(axis="x", labelrotation=45)
    return Drawn(figure, "Minimal-pair accuracy at the final evaluation per phenomenon, mean over"
                 " seeds; the last rows are the n-gram baselines on the same pairs.", series)


def _context_cells(summary: pd.DataFrame) -> pd.DataFrame:
    """The context task's mean loss per arm and (k_left, k_right), k as labels and in order."""
    rows = summary[(summary["task"] == "context") & (summary["split"] == "test") & (summary["group"] == "")]
    cells = rows["metric"].str.extract(CONTEXT_CELL).rename(columns={0: "left", 1: "right"})
    rows = rows.join(cells).dropna(subset=["left", "right"])
    order = {k: i for i, k in enumerate(sorted(set(rows["left"]), key=lambda k: math.inf if k == "all" else int(k)))}
    return rows.assign(left_at=rows["left"].map(order), right_at=rows["right"].map(order))



def _context(summary: pd.DataFrame, palette: dict) -> Drawn | str:
    """Per arm, the loss over the (k_left, k_right) grid and the two one-sided curves."""
    cells = _context_cells(summary)
    if cells.empty:
        return "no context task results"
    arms = [arm for arm in palette if arm in set(cells["arm"].map(_label))]
    figure = Figure(figsize=(10.5, 3.8 * len(arms)), layout="constrained")
    series: list[dict] = []
    for (grid_ax, sides_ax), arm in zip(figure.subplots(len(arms), 2, squeeze=False), arms):
        part = cells[cells["arm"].map(_label) == arm]
        _context_heatmap(grid_ax, part)
        _context_curves(sides_ax, part)
        grid_ax.set_title(_title(f"{arm}: loss (nats) by tokens kept"), fontsize="small")
        sides_ax.set_title(_title(f"{arm}: one side grows, the other whole"), fontsize="small")
        _result_series(arm, part.assign(objective=None), series)
    return Drawn(figure, "Context task: a held-out target's mean loss (nats, mean over seeds) with k"
                 " tokens kept on each side of it (left), and as one side grows while the other is kept"
                 " whole (right; band: 95% t interval over seeds, absent with one seed). Each objective"
                 " scores by its own rule (exact or pseudo; one scored by a bound is read by an exact or"
                 " pseudo variant of its score): read an arm against its own"
                 " (0, 0) corner, not against another arm.", series)


def _context_heatmap(ax, part: pd.DataFrame) -> None:
    grid = part.pivot_table(index="left_at", columns="right_at", values="mean")
    names = dict(zip(part["left_at"], part["left"]))
    grid.index, grid.columns = grid.index.map(names), grid.columns.map(names)
    sns.heatmap(grid, annot=True, fmt=".3f", annot_kws={"fontsize": 5}, cmap="viridis_r", ax=ax,
                cbar_kws={"label": "loss (nats)"})
    ax.set_xlabel("tokens kept right of the target")
    ax.set_ylabel("tokens kept left")


def _context_curves(ax, part: pd.DataFrame) -> None:
    sides = {"left": part[part["right"] == "all"].assign(k=part["left"], at=part["left_at"]),
             "right": part[part["left"] == "all"].assign(k=part["right"], at=part["right_at"])}
    for side, line in sides.items():
        line = line.sort_values("at")
        ax.plot(line["at"], line["mean"], marker="o", label=f"{side} side")
        ax.fill_between(line["at"], line["ci_low"], line["ci_high"], alpha=0.2)
    ticks = sides["left"].sort_values("at")
    ax.set_xticks(ticks["at"], ticks["k"])
    ax.set_xlabel("tokens kept on that side")
    ax.set_ylabel("loss (nats)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside the data
