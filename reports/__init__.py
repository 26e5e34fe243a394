"""Reports: read a study directory and write report.md, report.html, tables and figures.

Works from the files in the study directory alone, so no model code or torch is imported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from objbench.reports.aggregate import budget_used, final_rows, noise_floor, phase_budget, summarize
from objbench.reports.compare import compare_to_reference
from objbench.reports.document import Analysis, build_document
from objbench.reports.export import write_tables
from objbench.reports.figures import make_figures
from objbench.reports.keys import primary_keys, unmatched_primary
from objbench.reports.load import load_study
from objbench.reports.maturity import assess
from objbench.reports.render import to_html, to_markdown
from objbench.reports.repetition import repetition_table
from objbench.reports.stats import N_BOOT

__all__ = ["build_report"]


# what a reference copy holds: the report's text and the tables its numbers come from
REFERENCE_TABLES = ("summary", "comparisons", "verdict", "repetition")


def build_report(study_dir: Path, *, seed: int = 0, n_boot: int = N_BOOT,
                 reference: Path | None = None) -> dict[str, Path]:
    """Write the report files into `study_dir`; return them keyed by path relative to it.

    `seed` fixes the bootstrap, so the same study files always give the same report. With
    `reference`, also write a copy small enough to keep under version control there:
    report.md without its figures, and the CSVs of `REFERENCE_TABLES`.
    """
    study_dir = Path(study_dir)
    data = load_study(study_dir)
    final = final_rows(data.done_results)
    primary = primary_keys(data.config)
    summary = summarize(final, np.random.default_rng(seed), n_boot)
    noise = noise_floor(summary)
    comparisons, notes = compare_to_reference(final, data.items, data.reference, primary)
    notes += unmatched_primary(primary, summary)
    verdict = assess(data.items, data.done_results, primary, sorted(summary["arm"].unique()),
                     data.budget_axis, data.budget_value)
    figures, skipped = make_figures(data, final, summary, primary, study_dir / "figures")
    analysis = Analysis(data=data, summary=summary, comparisons=comparisons, noise=noise,
                        budget=budget_used(data), primary=primary,
                        repetition=repetition_table(data, primary), phases=phase_budget(data),
                        verdict=verdict, figures=figures,
                        skipped_figures=skipped, notes=notes)
    blocks = build_document(analysis)

    tables = {"results": data.results, "summary": summary, "comparisons": comparisons,
              "noise_floor": noise, "verdict": verdict.checks}
    if not analysis.repetition.empty:
        tables["repetition"] = analysis.repetition
    written = write_tables(tables, study_dir)
    if reference is not None:
        reference.mkdir(parents=True, exist_ok=True)
        write_tables({name: tables[name] for name in REFERENCE_TABLES if name in tables}, reference)
        (reference / "report.md").write_text(to_markdown(blocks, study_dir, figures=False), encoding="utf-8")
    for name, text in (("report.md", to_markdown(blocks, study_dir)),
                       ("report.html", to_html(blocks, f"objbench report: {data.name}"))):
        (study_dir / name).write_text(text, encoding="utf-8")
        written[name] = study_dir / name
    for figure in figures:
        for path in (figure.png, figure.svg):
            written[path.relative_to(study_dir).as_posix()] = path
    return written
