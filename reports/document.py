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
from objbench.reports.keys import arm_order, baselines_of, describe, key_rows
from objbench.reports.load import KEY, NO_LAYER, StudyData
from objbench.reports.maturity import Verdict
from objbench.reports.samples import samples_table
from objbench.tasks.base import NOT_APPLICABLE


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
class Callout:
    """A short statement a reader must not miss; ``warning`` when it limits what the study shows."""

    text: str
    warning: bool


Block = Heading | Paragraph | Bullets | Table | Image | Callout


@dataclass(frozen=True)
class Analysis:
    """Everything computed from a study that the report shows."""

    data: StudyData
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    noise: pd.DataFrame
    budget: pd.DataFrame
    primary: pd.DataFrame  # the primary result keys
    repetition: pd.DataFrame  # capped arms against their own whole-split runs (data_caps)
    phases: pd.DataFrame  # what each phase of a schedule arm used
    verdict: Verdict
    figures: list[SavedFigure]
    skipped_figures: list[str]  # one reason per figure that had no data
    notes: list[str]  # data the comparisons could not use


def build_document(analysis: Analysis) -> list[Block]:
    """The answer first (question, verdict, primary results), then figures, then the appendix."""
    return [
        *_opening(analysis),
        *_verdict(analysis),
        *_primary(analysis),
        *_phases(analysis),
        *_repetition(analysis),
        *_runs_not_used(analysis.data),
        *_figures(analysis),
        *_samples(analysis),
        Heading("Appendix", 2),
        *_exploratory(analysis),
        *_final_results(analysis),
        *_noise(analysis),
        *_details(analysis),
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


def _value_ci(mean: float, low: float, high: float) -> str:
    return f"{fmt(mean, 3)} [{fmt(low, 3)}, {fmt(high, 3)}]" if not np.isnan(low) else fmt(mean, 3)


def _opening(analysis: Analysis) -> list[Block]:
    data = analysis.data
    done = int((data.runs["state"] == "done").sum())
    question = str(data.config.get("description") or "").strip() or (
        "No question stated: add a `description` to the study file to say what it asks.")
    arms = ", ".join(arm_order(data, set(data.runs["arm"])))
    budget = f"{data.budget_value:.3g}" if data.budget_axis == "flops" else f"{data.budget_value:,.0f}"
    return [
        Heading(f"Study: {data.name}", 1),
        Paragraph(question),
        Paragraph(f"Arms: {arms} (reference: {data.reference}). Budget: {budget} {data.budget_axis}"
                  f" per run. Finished runs: {done} of {len(data.runs)}; only finished runs enter"
                  " the tables."),
    ]


CHECK_MARK = {"pass": "yes", "fail": "NO", "unclear": "not shown"}


def _verdict(analysis: Analysis) -> list[Block]:
    verdict = analysis.verdict
    blocks: list[Block] = [Heading("Verdict", 2), Callout(verdict.summary, verdict.mature is not True)]
    checks = verdict.checks
    if checks.empty:
        return blocks
    grid = check_grid(checks, arm_order(analysis.data, set(checks["arm"])))
    blocks += [Table(grid.reset_index()),
               Paragraph("Each cell: does the arm beat the bar, and by how much (difference and 95%"
                         " interval over seeds and items). Required checks decide the verdict.")]
    return blocks


def check_grid(checks: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    """Arms x checks, each cell the verdict and its interval; a check an arm cannot take (no
    sentence score for a zero-shot bar) reads "not applicable", never a blank or nan."""
    cells = checks.assign(cell=[
        f"{CHECK_MARK[s]}: {fmt(d, 2)} [{fmt(lo, 2)}, {fmt(hi, 2)}]"
        for s, d, lo, hi in zip(checks["status"], checks["diff"], checks["ci_low"], checks["ci_high"])])
    cells["check"] = [c + ("" if r else " (stronger bar)") for c, r in zip(cells["check"], cells["required"])]
    grid = cells.pivot(index="arm", columns="check", values="cell").fillna("not applicable")
    return grid.loc[arms, list(dict.fromkeys(cells["check"]))]


def _primary(analysis: Analysis) -> list[Block]:
    data, summary = analysis.data, analysis.summary
    heading = Heading("Primary results", 2)
    if analysis.primary.empty:
        return [heading, Paragraph("The study names no primary results.")]
    arms = arm_order(data, set(summary["arm"]))
    rows = [_primary_row(analysis, key, arms) for key in analysis.primary.to_dict("records")]
    scores, parents = _score_rows(data, arms), _parent_rows(data, arms)
    rows += scores + parents + _budget_rows(analysis.budget, arms)
    n_tests = int(analysis.comparisons.loc[analysis.comparisons["primary"], "p"].notna().sum())
    note = (f"Mean over seeds [95% t interval]; Δ = arm minus {data.reference}, tested paired over"
            f" seeds (and items where scored) with Holm's correction over these {n_tests}"
            f" comparisons (* = adjusted p < {ALPHA}). Everything else in this report is"
            " exploratory. Budget rows: what each arm consumed, mean over its runs.")
    if parents:
        note += (" Started from: the arm whose checkpoint a continued arm started from, at that"
                 " fraction of the budget; its budget rows include what the parent spent until then.")
    if scores:
        note += (" Sentence score: how zero-shot tasks scored a sentence: exact (its log-likelihood),"
                 " pseudo (a pseudo-log-likelihood), bound (an estimate of a lower bound on it, the"
                 " ELBO) or none (the objective has no score: its zero-shot results are not applicable).")
    return [heading, Table(pd.DataFrame(rows, columns=["result", *arms, "baselines"])), Paragraph(note)]


def _primary_row(analysis: Analysis, key: dict, arms: list[str]) -> dict:
    summary, comparisons = analysis.summary, analysis.comparisons
    mine = key_rows(summary, key).set_index("arm")
    tests = key_rows(comparisons, key).set_index("arm")
    row = {"result": describe(key)}
    for arm in arms:
        if arm not in mine.index:
            row[arm] = "not applicable: no score this task reads" if _not_scored(analysis.data, arm, key["task"]) \
                else "no result"
            continue
        cell = _value_ci(*mine.loc[arm, ["mean", "ci_low", "ci_high"]])
        if arm in tests.index:
            t = tests.loc[arm]
            star = "*" if t["significant"] else ""
            cell += f"; Δ {t['diff']:+.3g}, p_Holm {fmt_p(t['p_holm'])}{star}"
            cell += f" ({t['winner']} better)" if t["winner"] else ""
        row[arm] = cell
    bases = baselines_of(summary, key["task"], key["metric"], key["group"]).groupby("baseline")["mean"].first()
    row["baselines"] = ", ".join(f"{name} {fmt(v, 3)}" for name, v in bases.items()) or "none"
    return row


def _not_scored(data: StudyData, arm: str, task: str) -> bool:
    """Did ``task`` record that ``arm``'s objective has no score it can read (none; for `context`, a bound
    without an exact or pseudo variant)?"""
    done = data.done_results
    return bool(((done["arm"] == arm) & (done["task"] == task) & (done["metric"] == NOT_APPLICABLE)).any())


def _score_rows(data: StudyData, arms: list[str]) -> list[dict]:
    """How each arm's finished runs scored sentences zero-shot (none when no run recorded it)."""
    done = data.runs[data.runs["state"] == "done"]
    kinds = {arm: ", ".join(sorted(set(done.loc[done["arm"] == arm, "score_kind"]) - {""})) for arm in arms}
    if not any(kinds.values()):
        return []
    return [{"result": "sentence score", "baselines": "", **{arm: kinds[arm] or "n/a" for arm in arms}}]


def _parent_rows(data: StudyData, arms: list[str]) -> list[dict]:
    """Which arms started from another arm's checkpoint, so that a budget shared by parent and
    child is read as one (no row when no arm did)."""
    done = data.runs[data.runs["state"] == "done"]
    parents = {arm: ", ".join(sorted(set(done.loc[done["arm"] == arm, "init"]) - {""})) for arm in arms}
    if not any(parents.values()):
        return []
    return [{"result": "started from", "baselines": "", **{arm: parents[arm] or "scratch" for arm in arms}}]


def _budget_rows(budget: pd.DataFrame, arms: list[str]) -> list[dict]:
    by_arm = budget.set_index("arm")

    def cell(arm: str, axis: str) -> str:
        value = by_arm.loc[arm, axis] if arm in by_arm.index else np.nan
        if np.isnan(value):
            return "n/a"
        return f"{value:.3g}" if axis in ("flops", "epoch") else f"{value:,.0f}"

    names = {"epoch": "epochs over the training data", "unique_tokens": "unique tokens seen"}
    logged = [axis for axis in ("steps", "tokens", "targets", "flops", "epoch", "unique_tokens")
              if by_arm[axis].notna().any()]  # runs from before data use was logged lack the last two
    return [{"result": f"budget used: {names.get(axis, axis)}", "baselines": "",
             **{arm: cell(arm, axis) for arm in arms}} for axis in logged]


def _phases(analysis: Analysis) -> list[Block]:
    """What each phase of a schedule arm used, on every budget axis."""
    table = analysis.phases
    if table.empty:
        return []
    counts = {axis: table[axis].map(lambda v: f"{v:,.0f}") for axis in ("steps", "tokens", "targets")}
    cells = pd.DataFrame({"arm": table["arm"], "phase": table["phase"], **counts,
                          "flops": table["flops"].map(lambda v: f"{v:.3g}"),
                          "share of the FLOPs": table["of_flops"].map(lambda v: f"{v:.1%}")})
    return [Heading("Budget by phase", 3), Table(cells), Paragraph(
        "Each schedule arm's use of the budget, phase by phase (mean over its finished runs): phases"
        f" switch at fractions of the {analysis.data.budget_axis} budget, and a phase that reads fewer"
        " targets per token (a masked phase) spends the same share of it on other amounts of data.")]


def _repetition(analysis: Analysis) -> list[Block]:
    """Under a data_caps sweep, each arm on a capped, repeated corpus against itself on fresh data."""
    table = analysis.repetition
    if table.empty:
        return []
    cells = pd.DataFrame({
        "arm": table["arm"], "cap (unique tokens)": table["cap"].map(lambda c: f"{c:,.0f}"),
        "versus": table["versus"],
        "result": [describe(key) for key in table[KEY].to_dict("records")],
        "epochs": table["epochs"].map(lambda e: f"{e:.3g}"),
        "value at end": table["value"].map(lambda v: fmt(v, 3)),
        "cost of repetition [95% CI]": [_value_ci(*r) for r in table[["cost", "cost_low", "cost_high"]].to_numpy()],
        "p (Holm)": table["p_holm"].map(fmt_p),
        "gain in the 2nd half [95% CI]": [_value_ci(*r) for r in table[["late_gain", "late_low", "late_high"]].to_numpy()],
        "best at epoch": table["best_epoch"].map(lambda e: fmt(e, 3)),
    })
    return [Heading("Repeated data against fresh data", 2), Table(cells), Paragraph(
        "Each arm on a capped corpus, repeated for 'epochs' passes, against the same arm on its"
        " largest cap ('versus'; '-all' is the whole split) at the same budget. Cost: how much worse the capped"
        " run ends, paired over seeds, in the result's own units, positive = worse (0: repeated data was"
        " worth as much as fresh data); Holm's correction over this table's costs. Gain in the 2nd half:"
        " how much the last half of the budget improved the result, positive = better (near 0 or"
        " below: more passes stopped helping). Best at epoch: where each run's value was best, mean"
        " over seeds (the last epoch: still improving when the budget ran out).")]


def _runs_not_used(data: StudyData) -> list[Block]:
    bad = data.runs[data.runs["state"] != "done"]
    if bad.empty:
        return []
    return [
        Heading("Runs left out", 2),
        Paragraph("Runs that failed, are still running or have no readable status are left out"
                  " of every table and figure; the others are compared on the seeds they share."),
        Table(_cells(bad[["arm", "seed", "state", "error"]])),
    ]


def _details(analysis: Analysis) -> list[Block]:
    items = [*analysis.data.problems, *analysis.notes]
    if not items:
        return []
    return [Heading("Details", 3),
            Paragraph("What the report could not use as it was written, and why: files that"
                      " were damaged or missing, and per-item scores that could not be paired"
                      " (those comparisons fall back to seeds alone)."),
            Bullets(items)]


def _final_results(analysis: Analysis) -> list[Block]:
    summary = analysis.summary.merge(analysis.noise[[*KEY, "noise_sd"]], on=KEY, how="left")
    if summary.empty:
        return [Heading("All results", 3), Paragraph("No finished run reported results.")]
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
        "Every result at the last evaluation of each finished run (also in summary.csv);"
        " metric@name is a baseline's value (the same for every arm). Mean and standard"
        " deviation over seeds. The t interval is the one to read: a percentile bootstrap over"
        " 3-5 seeds cannot reach beyond the smallest and largest seed and covers the mean far"
        " less often than 95% (about 75% at 3 seeds, 83% at 5). 'noise sd' is the seed-to-seed"
        " standard deviation pooled over arms. A layer left empty on a per-layer metric is the"
        " layer chosen on each run's validation split."
    )
    if single:
        note += " With a single seed no interval can be estimated: shown as n/a."
    return [Heading("All results", 3), Paragraph(note), Table(_drop_empty_keys(table))]


def _exploratory(analysis: Analysis) -> list[Block]:
    data, table = analysis.data, analysis.comparisons
    heading = Heading(f"All comparisons with {data.reference}", 3)
    if table.empty:
        return [heading, Paragraph("No comparison could be made (see Details).")]
    table = table.merge(analysis.noise[[*KEY, "noise_sd"]], on=KEY, how="left")
    table = table.sort_values("primary", ascending=False, kind="stable")
    cells = pd.DataFrame({
        **_key_cells(table),
        "arm": table["arm"],
        "kind": np.where(table["primary"], "primary", "exploratory"),
        "diff (arm − ref)": table["diff"].map(fmt),
        "95% CI": _intervals(table["ci_low"], table["ci_high"]),
        "p": table["p"].map(fmt_p),
        "p (Holm)": table["p_holm"].map(fmt_p),
        "better": table["winner"],
        "paired over": table["paired_over"],
        "n seeds": table["n_seeds"],
        "n items": table["n_items"],
        "noise sd": table["noise_sd"].map(fmt),
    })
    note = (
        f"diff is arm minus {data.reference} in the metric's own units (for a loss, negative is"
        " better). Primary rows repeat the table above; exploratory rows carry their raw p only:"
        " with this many of them some fall below 0.05 by chance, so none is declared won. Paired"
        " over seeds: t-test on per-seed differences (n/a with one common seed, or when every"
        " seed differs by exactly the same amount). Paired over seeds x items: per-item scores"
        " of both arms on the same items, with seeds and items both treated as random (two-way"
        " variance components, Satterthwaite degrees of freedom); 'items, 1 seed' tests only the"
        " one seed pair and says nothing about reseeding. Validation losses of different"
        " objectives, baselines and diagnostics are never compared."
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
        Heading("Noise floor", 3),
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


def _samples(analysis: Analysis) -> list[Block]:
    table = samples_table(analysis.data, arm_order(analysis.data, set(analysis.data.runs["arm"])))
    if table is None:
        return []
    return [Heading("Generated text", 2),
            Paragraph("The generation task's continuations of the same held-out prompts (each arm's"
                      " lowest seed, its objective's own sampler), beside the true continuation."),
            Table(table)]


def _provenance(data: StudyData) -> list[Block]:
    times = ["wall_time_s", "train_s", "tasks_s"]
    runs = data.runs.assign(**{t: data.runs[t].map(fmt) for t in times})
    blocks: list[Block] = [Heading("Provenance", 3)]
    if data.provenance:
        flat = _flatten(data.provenance)
        blocks.append(Table(pd.DataFrame({"key": list(flat), "value": list(flat.values())})))
    else:
        blocks.append(Paragraph("provenance.json is missing: package versions, data hashes,"
                                " hardware and git commit are unknown."))
    blocks += [
        Table(_cells(runs[["arm", "seed", "state", "objective", "options", "score_kind", "config_hash",
                           *times]])),
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
