"""The content of a report as a list of blocks, so Markdown and HTML say exactly the same thing.

Blocks hold plain text; each renderer escapes it for its own format. Nothing here is markup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from objbench import __version__
from objbench.reports.compare import ALPHA
from objbench.reports.figures import SavedFigure
from objbench.reports.load import KEY, NO_LAYER, StudyData


@dataclass(frozen=True)
class Heading:
    text: str
    level: int


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame  # cells already formatted as strings


@dataclass(frozen=True)
class Image:
    figure: SavedFigure


Block = Heading | Paragraph | Bullets | Table | Image


@dataclass(frozen=True)
class Analysis:
    """Everything computed from a study that the report shows."""

    data: StudyData
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    noise: pd.DataFrame
    budget: pd.DataFrame
    figures: list[SavedFigure]
    skipped_figures: list[str]  # one reason per figure that had no data
    notes: list[str]  # data the comparisons could not use


def build_document(analysis: Analysis) -> list[Block]:
    """Sections in reading order: runs, failures, results, tests, noise, figures, provenance."""
    return [
        *_header(analysis),
        *_runs_not_used(analysis.data),
        *_problems(analysis),
        *_final_results(analysis),
        *_baselines(analysis.summary),
        *_comparisons(analysis),
        *_noise(analysis),
        *_figures(analysis),
        *_provenance(analysis.data),
    ]


def fmt(value: object, digits: int = 4) -> str:
    """A number with `digits` significant digits; NaN and None become 'n/a'."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}g}"
    return str(value)


def fmt_p(p: float) -> str:
    return "n/a" if np.isnan(p) else ("<0.0001" if p < 1e-4 else f"{p:.4f}")


def _header(analysis: Analysis) -> list[Block]:
    data = analysis.data
    done = int((data.runs["state"] == "done").sum())
    blocks: list[Block] = [
        Heading(f"Study: {data.name}", 1),
        Paragraph(
            f"Budget: {fmt(data.budget_value)} {data.budget_axis} per run. Reference arm:"
            f" {data.reference}. Finished runs: {done} of {len(data.runs)}; only finished runs"
            " enter the tables, so every arm is measured at the budget it completed."
        ),
    ]
    if not analysis.budget.empty:
        budget = analysis.budget.assign(of_budget=analysis.budget["of_budget"] * 100)
        blocks += [
            Heading("Budget used", 2),
            Paragraph("Mean over each arm's finished runs, from the last line of metrics.jsonl;"
                      " 'final budget' is the budget value of the last evaluation."),
            Table(_cells(budget.rename(columns={"of_budget": "% of budget",
                                                "final_budget": "final budget"}))),
        ]
    return blocks


def _runs_not_used(data: StudyData) -> list[Block]:
    bad = data.runs[data.runs["state"] != "done"]
    if bad.empty:
        return [Heading("Failed runs", 2), Paragraph(f"None: all {len(data.runs)} runs finished.")]
    return [
        Heading("Failed runs", 2),
        Paragraph("Runs that failed, are still running or have no readable status are left out"
                  " of every table and figure."),
        Table(_cells(bad[["arm", "seed", "state", "error"]])),
    ]


def _problems(analysis: Analysis) -> list[Block]:
    items = [*analysis.data.problems, *analysis.notes]
    return [Heading("Data problems", 2), Bullets(items)] if items else []


def _final_results(analysis: Analysis) -> list[Block]:
    summary = analysis.summary.merge(analysis.noise[[*KEY, "noise_sd"]], on=KEY, how="left")
    if summary.empty:
        return [Heading("Final results", 2), Paragraph("No finished run reported results.")]
    single = bool((summary["n_seeds"] < 2).any())
    table = pd.DataFrame({
        **_key_cells(summary),
        "arm": summary["arm"],
        "mean ± std": [f"{fmt(m)} ± {fmt(s)}" for m, s in zip(summary["mean"], summary["std"])],
        "95% CI (t)": _intervals(summary["ci_low"], summary["ci_high"]),
        "95% CI (bootstrap)": _intervals(summary["boot_low"], summary["boot_high"]),
        "n seeds": summary["n_seeds"],
        "noise sd": summary["noise_sd"].map(fmt),
    })
    note = (
        "Last evaluation of each finished run; mean and standard deviation over seeds. The t"
        " interval is the one to read: a percentile bootstrap over 3-5 seeds cannot reach beyond"
        " the smallest and largest seed and covers the mean far less often than 95%"
        " (about 75% at 3 seeds, 83% at 5). 'noise sd' is the seed-to-seed standard deviation"
        " pooled over arms (see Noise floor)."
    )
    if single:
        note += " With a single seed no interval can be estimated: shown as n/a."
    return [Heading("Final results", 2), Paragraph(note), Table(_drop_empty_keys(table))]


def _baselines(summary: pd.DataFrame) -> list[Block]:
    """Does each arm's best probe beat the task's majority-class baseline? Said in words."""
    majority = summary[summary["metric"] == "majority_acc"].groupby("task")["mean"].first()
    probes = summary[(summary["metric"] == "probe_acc") & summary["task"].isin(majority.index)]
    if probes.empty:
        return []
    best = probes.loc[probes.groupby(["task", "arm"])["mean"].idxmax()]
    verdicts = []
    for row in best.itertuples():
        base = majority[row.task]
        verdicts.append("above, CI excludes it" if row.ci_low > base else
                        "above on the mean only" if row.mean > base else "NOT above")
    table = pd.DataFrame({
        "task": best["task"], "arm": best["arm"],
        "best probe": [f"layer {fmt(l)} {p}" for l, p in zip(best["layer"], best["pooling"])],
        "probe acc": best["mean"].map(fmt), "95% CI (t)": _intervals(best["ci_low"], best["ci_high"]),
        "majority": best["task"].map(majority).map(fmt), "verdict": verdicts,
    })
    return [
        Heading("Probes against the majority baseline", 2),
        Paragraph("Each arm's best probe (highest mean test accuracy over layers and poolings,"
                  " so slightly optimistic) against always answering the most frequent label."),
        Table(table),
    ]


def _comparisons(analysis: Analysis) -> list[Block]:
    data, table = analysis.data, analysis.comparisons
    heading = Heading(f"Comparisons with the reference arm ({data.reference})", 2)
    if table.empty:
        return [heading, Paragraph("No comparison could be made (see Data problems).")]
    table = table.merge(analysis.noise[[*KEY, "noise_sd"]], on=KEY, how="left")
    tested = int(table["p"].notna().sum())
    cells = pd.DataFrame({
        **_key_cells(table),
        "arm": table["arm"],
        "diff (arm − ref)": table["diff"].map(fmt),
        "95% CI": _intervals(table["ci_low"], table["ci_high"]),
        "p": table["p"].map(fmt_p),
        "p (Holm)": table["p_holm"].map(fmt_p),
        "sig.": np.where(table["significant"], "*", ""),
        "better": table["winner"],
        "paired over": table["paired_over"],
        "n seeds": table["n_seeds"],
        "n items": table["n_items"],
        "noise sd": table["noise_sd"].map(fmt),
    })
    note = (
        f"diff is arm minus {data.reference} in the metric's own units (for a loss, negative is"
        " better); 'better' names the better arm when the difference is significant. Pairs share"
        " the seed number. Paired over seeds: t-test on per-seed differences (n/a with one common"
        " seed, or when every seed differs by exactly the same amount, which no test can judge)."
        " Paired over seeds x items: per-item scores of both arms on the same items, with seeds"
        " and items both treated as random (two-way variance components, Satterthwaite"
        " degrees of freedom), so run-to-run variation is not mistaken for an effect; 'items, 1"
        " seed' tests only the one seed pair and says nothing about reseeding."
        f" Holm-Bonferroni correction over all {tested} tested comparisons; * = adjusted p <"
        f" {ALPHA}."
    )
    return [heading, Paragraph(note), Table(_drop_empty_keys(cells))]


def _noise(analysis: Analysis) -> list[Block]:
    noise = analysis.noise
    if noise.empty:
        return []
    cells = pd.DataFrame({
        **_key_cells(noise), "noise sd": noise["noise_sd"].map(fmt), "df": noise["dof"],
        "arms": noise["n_arms"],
    })
    return [
        Heading("Noise floor", 2),
        Paragraph("Seed-to-seed standard deviation of each final result, pooled over arms (df ="
                  " degrees of freedom; 0 means no arm had two seeds). Differences between arms"
                  " of this size arise from reseeding alone."),
        Table(_drop_empty_keys(cells)),
    ]


def _figures(analysis: Analysis) -> list[Block]:
    blocks: list[Block] = [Heading("Figures", 2)]
    for figure in analysis.figures:
        blocks += [Heading(figure.title, 3), Image(figure)]
    if analysis.skipped_figures:
        blocks.append(Bullets(analysis.skipped_figures))
    return blocks


def _provenance(data: StudyData) -> list[Block]:
    runs = data.runs.assign(wall_time_s=data.runs["wall_time_s"].map(fmt))
    blocks: list[Block] = [Heading("Provenance", 2)]
    if data.provenance:
        flat = _flatten(data.provenance)
        blocks.append(Table(pd.DataFrame({"key": list(flat), "value": list(flat.values())})))
    else:
        blocks.append(Paragraph("provenance.json is missing: package versions, data hashes,"
                                " hardware and git commit are unknown."))
    blocks += [
        Table(_cells(runs[["arm", "seed", "state", "objective", "options", "config_hash",
                           "wall_time_s"]])),
        Paragraph(f"Report written by objbench {__version__} from the files of this study"
                  " directory alone."),
    ]
    return blocks


def _flatten(mapping: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value)
    return flat


def _key_cells(frame: pd.DataFrame) -> dict[str, pd.Series]:
    cells = {column: frame[column].astype(str) for column in KEY}
    cells["layer"] = frame["layer"].map(lambda layer: "" if layer == NO_LAYER else str(layer))
    return cells


def _drop_empty_keys(table: pd.DataFrame) -> pd.DataFrame:
    """Key columns that are empty in every row (no layers, no groups) only add noise."""
    empty = [c for c in KEY if c in table and (table[c] == "").all()]
    return table.drop(columns=empty)


def _intervals(low: pd.Series, high: pd.Series) -> list[str]:
    return ["n/a" if np.isnan(lo) else f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in zip(low, high)]


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.apply(lambda column: column.map(fmt))
