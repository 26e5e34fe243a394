"""End to end: a synthetic study directory in, every report file out, nothing unescaped."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from objbench.reports import build_report
from objbench.reports.load import ReportWarning
from objbench.reports.render import markdown_table, md_escape
from objbench.reports.stats import holm

XSS = "<script>alert(1)</script>"
# a folder name cannot hold '/', so the arm name plants markup without one, plus mathtext `$`
EVIL_ARM = "<img src=x onerror=alert(1)>$x$"
ARMS = {"mlm": 0.0, "clm": 0.05, EVIL_ARM: 0.0}  # planted accuracy gain on agreement items
CONTEXT = {"mlm": -0.08, "clm": 0.06, EVIL_ARM: 0.05}  # planted contextual gain (POS, ambiguous)
SEEDS = (0, 1, 2)
N_ITEMS = 300
LAYERS = (0, 1, 2)
PHENOMENA = ("anaphor", "subj_verb")
BUDGET = 4096.0
PRIMARY = [{"task": "agreement", "metric": "acc_sum"},
           {"task": "pos", "metric": "probe_acc_ambiguous", "pooling": "first-subtoken"}]
FIGURES = ("primary", "primary_vs_budget", "probe_layers", "learning_curves", "phenomena")


def _jsonl(path: Path, rows: list[dict], truncate_last: bool = False) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if truncate_last:
        text = text[: -len(json.dumps(rows[-1])) // 2 - 1]  # half of the last line, no newline
    path.write_text(text, encoding="utf-8")


def _result(arm: str, seed: int, point: float, final: bool, task: str, metric: str,
            value: float, higher: bool = True, layer: int | None = None,
            group: str | None = None, n: int = N_ITEMS, pooling: str | None = None) -> dict:
    return {
        "study": "toy", "arm": arm, "objective": arm, "options": "{}", "seed": seed,
        "budget_axis": "tokens", "budget_value": point, "step": int(point // 64),
        "tokens": point, "targets": point / 8, "flops": point * 1e6, "task": task, "metric": metric,
        "split": "test", "layer": layer, "pooling": pooling, "group": group,
        "value": value, "n": n, "higher_is_better": higher, "final": final,
    }


def _items(arm: str, seed: int, point: float, task: str, metric: str, values: np.ndarray,
           pooling: str | None = None) -> list[dict]:
    return [{"arm": arm, "seed": seed, "budget_value": point, "task": task, "metric": metric,
             "layer": None, "pooling": pooling, "item": f"i{i}", "value": float(v)}
            for i, v in enumerate(values)]


def _scored(arm: str, seed: int, point: float, final: bool, task: str, metric: str,
            values: np.ndarray, pooling: str | None = None) -> tuple[list[dict], list[dict]]:
    """A result row and its per-item values (which average to it)."""
    return ([_result(arm, seed, point, final, task, metric, float(values.mean()), pooling=pooling)],
            _items(arm, seed, point, task, metric, values, pooling))


def _run_rows(rng, arm: str, seed: int, point: float, difficulty: np.ndarray, phenomena: bool,
              context: dict) -> tuple[list[dict], list[dict]]:
    final, grown = point == BUDGET, point / BUDGET
    accuracy = 0.6 + ARMS[arm] + 0.1 * grown + rng.normal(0, 0.005)
    correct = (difficulty + rng.normal(0, 0.03, N_ITEMS) < accuracy).astype(float)
    rows = [_result(arm, seed, point, final, "val_loss", "loss", 3.0 - 0.2 * grown + rng.normal(0, 0.02),
                    False)]
    items: list[dict] = []
    for metric, values in (("acc_sum", correct), ("acc_sum@unigram", (difficulty < 0.5).astype(float))):
        r, i = _scored(arm, seed, point, final, "agreement", metric, values)
        rows, items = rows + r, items + i
        if phenomena:
            rows += [_result(arm, seed, point, final, "agreement", metric, float(values[k::2].mean()),
                             group=g, n=N_ITEMS // 2) for k, g in enumerate(PHENOMENA)]
    gain = (rng.uniform(size=N_ITEMS) < abs(context[arm])) * np.sign(context[arm])
    lexical = (difficulty < 0.7).astype(float)
    model = np.clip(lexical + gain, 0, 1)
    for metric, values, pooling in (("probe_acc_ambiguous", model, "first-subtoken"),
                                    ("probe_acc_ambiguous@lexical", lexical, None),
                                    ("contextual_gain_ambiguous", gain, "first-subtoken")):
        r, i = _scored(arm, seed, point, final, "pos", metric, values, pooling)
        rows, items = rows + r, items + i
    for layer in LAYERS:
        probe = 0.7 + 0.05 * layer + ARMS[arm] + rng.normal(0, 0.01)
        rows.append(_result(arm, seed, point, final, "sentiment", "probe_acc", probe, layer=layer,
                            pooling="mean"))
        rows.append(_result(arm, seed, point, final, "sentiment", "selectivity", probe - 0.5,
                            layer=layer, pooling="mean"))
    return rows, items


def write_study(root: Path, items: bool = True, phenomena: bool = True,
                context: dict | None = None) -> Path:
    """3 arms x 3 seeds; EVIL_ARM seed 2 failed; one results file ends in a truncated line."""
    rng = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    (root / "study.yaml").write_text(yaml.safe_dump({
        "name": f"toy {XSS}", "description": f"Which objective learns agreement? {XSS}",
        "reference": "mlm", "arms": list(ARMS), "seeds": list(SEEDS), "budget": {"tokens": BUDGET},
        "primary": PRIMARY,
    }))
    (root / "provenance.json").write_text(json.dumps({
        "objbench": "0.1.0", "git_commit": "abc123", "packages": {"numpy": np.__version__},
        "hardware": XSS, "data_hash": "d41d8cd9",
    }))
    difficulty = rng.uniform(size=N_ITEMS)
    for arm in ARMS:
        for seed in SEEDS:
            run = root / "runs" / arm / f"seed{seed}"
            run.mkdir(parents=True)
            failed = arm == EVIL_ARM and seed == 2
            status = {"state": "failed" if failed else "done",
                      "error": f"OOM {XSS}" if failed else None, "config_hash": f"h{seed}",
                      "wall_time_s": 12.5, "arm": arm, "seed": seed, "objective": arm,
                      "options": {"note": XSS}}
            (run / "status.json").write_text(json.dumps(status))
            steps = range(8, 65, 8) if not failed else range(8, 33, 8)
            _jsonl(run / "metrics.jsonl", [
                {"step": s, "tokens": s * 64, "input_tokens": s * 64, "targets": s * 10,
                 "flops": s * 64e6, "lr": 1e-3, "loss": 5 / s**0.3 + rng.normal(0, 0.01),
                 **({"val_loss": 5.2 / s**0.3 + rng.normal(0, 0.02)} if s % 16 == 0 else {})}
                for s in steps
            ], truncate_last=failed)
            if failed:
                continue
            rows, item_rows = [], []
            for point in (BUDGET / 2, BUDGET):
                r, i = _run_rows(rng, arm, seed, point, difficulty, phenomena, context or CONTEXT)
                rows, item_rows = rows + r, item_rows + i
            _jsonl(run / "results.jsonl", rows + [rows[0]], truncate_last=(arm, seed) == ("clm", 1))
            if items:
                _jsonl(run / "items.jsonl", item_rows)
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = write_study(tmp_path_factory.mktemp("study") / "toy")
    with pytest.warns(ReportWarning, match="truncated"):
        written = build_report(root, n_boot=2000)
    return root, written


def _table_after(markdown: str, heading: str) -> list[list[str]]:
    """Cells of the first Markdown table after `heading`, split on unescaped pipes."""
    lines = markdown.split(heading + "\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    lines = lines[start:end]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]


def test_every_output_file_exists(report):
    root, written = report
    expected = {"report.md", "report.html", "results.csv", "results.parquet", "summary.csv",
                "comparisons.csv", "noise_floor.csv", "verdict.csv"}
    expected |= {f"figures/{name}.{ext}" for ext in ("png", "svg") for name in FIGURES}
    assert set(written) == expected
    assert all(path.is_file() and path.stat().st_size > 0 for path in written.values())
    assert all(path.parent in (root, root / "figures") for path in written.values())


def test_the_report_opens_with_question_verdict_and_primary_results(report):
    root, _ = report
    markdown = (root / "report.md").read_text()
    headings = [line for line in markdown.splitlines() if line.startswith("#")]
    assert headings[:4] == [f"# Study: toy {md_escape(XSS)}", "## Verdict", "## Primary results",
                            "## Runs left out"]
    assert headings.index("## Figures") < headings.index("## Appendix") < headings.index("### All results")
    assert markdown.index(md_escape(f"Which objective learns agreement? {XSS}")) < markdown.index("## Verdict")
    html = (root / "report.html").read_text()
    order = [html.index(t) for t in ("<h1>", "Which objective", "<h2>Verdict", "<h2>Primary results",
                                     "<h2>Figures", "<h2>Appendix")]
    assert order == sorted(order), "report.md and report.html tell the story in the same order"


def test_verdict_warns_about_the_arm_whose_layers_hold_less_than_its_embeddings(report):
    root, _ = report
    checks = pd.read_csv(root / "verdict.csv")
    context = checks[checks["check"].str.contains("contextual layers")].set_index("arm")
    assert context.loc["mlm", "status"] == "fail" and context.loc["mlm", "ci_high"] < 0
    assert context.loc["clm", "status"] == "pass" and context.loc["clm", "ci_low"] > 0
    unigram = checks[checks["check"] == "agreement acc_sum above unigram"].set_index("arm")
    assert (unigram["status"] == "pass").all() and unigram["required"].all()
    lexical = checks[checks["check"] == "pos probe_acc_ambiguous above lexical"]
    assert not lexical["required"].any()  # a stronger bar, shown but not required
    markdown = (root / "report.md").read_text()
    verdict = markdown.split("## Verdict", 1)[1].split("## Primary results", 1)[0]
    assert "> **Warning:** The encoders are too young" in verdict
    assert "pos: contextual layers above embeddings (ambiguous words) (mlm)" in verdict
    assert "clm" not in verdict.split("Not shown beyond doubt:", 1)[1].split(".", 1)[0]


def test_no_warning_when_every_arm_passes(tmp_path):
    root = write_study(tmp_path / "mature", context={arm: 0.1 for arm in ARMS})
    with pytest.warns(ReportWarning):
        build_report(root, n_boot=200)
    verdict = (root / "report.md").read_text().split("## Verdict", 1)[1].split("##", 1)[0]
    assert "can speak about the objectives" in verdict and "Warning" not in verdict


def test_primary_table_has_arms_as_columns_budget_rows_and_the_corrected_winner(report):
    root, _ = report
    rows = _table_after((root / "report.md").read_text(), "## Primary results")
    header, body = rows[0], rows[2:]
    assert header == ["result", "mlm", "clm", md_escape(EVIL_ARM), "baselines"]
    by_result = {row[0]: row for row in body}
    agreement = by_result["agreement acc\\_sum"]
    assert agreement[1].startswith("0.") and "Δ" not in agreement[1]  # the reference
    assert "(clm better)" in agreement[2] and "*" in agreement[2]
    assert agreement[4].startswith("unigram 0.")
    assert by_result["pos probe\\_acc\\_ambiguous (first-subtoken, layer chosen on validation)"][4].startswith("lexical")
    assert [row[0] for row in body[2:]] == [f"budget used: {a}" for a in ("steps", "tokens", "targets", "flops")]
    comparisons = pd.read_csv(root / "comparisons.csv")
    primary = comparisons[comparisons["primary"]]
    assert set(zip(primary["task"], primary["metric"])) == {("agreement", "acc_sum"), ("pos", "probe_acc_ambiguous")}
    np.testing.assert_allclose(primary["p_holm"], holm(primary["p"].to_numpy()))
    assert comparisons.loc[~comparisons["primary"], "p_holm"].isna().all()
    assert "@" not in "".join(comparisons["metric"]) and "val_loss" not in set(comparisons["task"])


def test_failed_run_is_listed_with_its_error(report):
    root, _ = report
    markdown = (root / "report.md").read_text()
    rows = _table_after(markdown, "## Runs left out")
    assert rows[0] == ["arm", "seed", "state", "error"]
    assert rows[2:] == [[md_escape(EVIL_ARM), "2", "failed", md_escape(f"OOM {XSS}")]]
    assert "OOM &lt;script&gt;alert(1)&lt;/script&gt;" in (root / "report.html").read_text()


def test_html_is_self_contained_and_escaped(report):
    root, _ = report
    page = (root / "report.html").read_text()
    for forbidden in ("http://", "https://", 'src="http', "<script", "<img src=x", "//cdn"):
        assert forbidden not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # name, question, error, provenance
    assert "&lt;img src=x onerror=alert(1)&gt;$x$" in page
    assert page.count('src="data:image/png;base64,') == len(FIGURES)


def test_all_results_table_shape(report):
    root, _ = report
    rows = _table_after((root / "report.md").read_text(), "### All results")
    header, rule, body = rows[0], rows[1], rows[2:]
    assert header == ["task", "metric", "split", "layer", "pooling", "group", "arm", "mean ± std",
                      "95% CI (t)", "95% CI (bootstrap)", "n seeds", "noise sd"]
    assert rule == ["---"] * len(header)
    assert all(len(row) == len(header) for row in body)
    # per arm: val_loss, agreement (model and unigram) x (overall + 2 phenomena), pos x 3,
    # sentiment 2 metrics x 3 layers
    assert len(body) == (1 + 2 * (1 + len(PHENOMENA)) + 3 + 2 * len(LAYERS)) * len(ARMS)
    seeds = {row[6]: row[10] for row in body}
    assert seeds == {"clm": "3", "mlm": "3", md_escape(EVIL_ARM): "2"}


def test_comparisons_find_the_planted_gain(report):
    root, _ = report
    table = pd.read_csv(root / "comparisons.csv")
    overall = table[(table["task"] == "agreement") & table["group"].isna()].set_index("arm")
    assert overall.loc["clm", "paired_over"] == "seeds x items"
    assert overall.loc["clm", "diff"] == pytest.approx(0.05, abs=0.02)
    assert overall.loc["clm", "significant"] and overall.loc["clm", "winner"] == "clm"
    assert not overall.loc[EVIL_ARM, "significant"]
    assert overall.loc[EVIL_ARM, "n_seeds"] == 2  # the failed seed is not paired
    tested = table["p"].notna() & table["primary"]
    assert (table.loc[tested, "p_holm"] >= table.loc[tested, "p"]).all()
    assert not table.loc[~tested, "significant"].any()


def test_results_csv_keeps_every_row_with_nulls_restored(report):
    root, _ = report
    results = pd.read_csv(root / "results.csv")
    parquet = pd.read_parquet(root / "results.parquet")
    assert len(results) == len(parquet)
    # 8 done runs x 2 points x 16 rows; clm seed 1 lost its truncated last line, which was a
    # duplicate of its first row
    assert len(results) == 8 * 2 * (1 + 2 * (1 + len(PHENOMENA)) + 3 + 2 * len(LAYERS))
    assert results.loc[results["task"] == "val_loss", "layer"].isna().all()
    assert set(results["run_state"]) == {"done"}


def test_figures_plot_results_with_baselines_as_reference_lines_only(report):
    _, written = report
    from objbench.reports.figures import SavedFigure  # noqa: F401  (the series' contract)

    root = written["report.md"].parent
    figures = {f.name: f for f in _saved_figures(root)}
    primary = figures["primary"].series
    results = primary[primary["role"] == "result"]
    assert set(zip(results["task"], results["metric"])) == {(p["task"], p["metric"]) for p in PRIMARY}
    baselines = primary[primary["role"] == "baseline"]
    assert set(baselines["metric"]) == {"acc_sum@unigram", "probe_acc_ambiguous@lexical"}
    assert not results["metric"].str.contains("@").any()
    curves = figures["learning_curves"].series
    assert (curves.groupby("panel")["objective"].nunique() == 1).all(), \
        "an axis holds validation losses of two objectives"
    layers = figures["probe_layers"].series
    assert set(layers.loc[layers["role"] == "result", "metric"]) == {"probe_acc"}


def _saved_figures(root: Path):
    """The figures as `make_figures` describes them, redrawn from the study's files."""
    from objbench.reports.aggregate import final_rows, summarize
    from objbench.reports.figures import make_figures
    from objbench.reports.keys import primary_keys
    from objbench.reports.load import load_study

    with pytest.warns(ReportWarning):
        data = load_study(root)
    final = final_rows(data.done_results)
    summary = summarize(final, np.random.default_rng(0), 200)
    saved, _ = make_figures(data, final, summary, primary_keys(data.config), root / "figures")
    return saved


def test_missing_data_skips_figures_and_says_so(tmp_path):
    root = write_study(tmp_path / "plain", items=False, phenomena=False)
    with pytest.warns(ReportWarning):
        written = build_report(root, n_boot=500)
    assert "figures/phenomena.png" not in written
    markdown = (root / "report.md").read_text()
    assert "Minimal-pair accuracy by phenomenon: skipped, no results broken down" in markdown
    comparisons = pd.read_csv(root / "comparisons.csv")
    assert set(comparisons["paired_over"]) == {"seeds"}
    assert "Not assessed" in markdown.split("## Verdict", 1)[1].split("##", 1)[0]


def test_markdown_table_escapes_pipes_and_markup():
    table = markdown_table(pd.DataFrame({"a|b": ["x|y", "<b>*z*</b>"], "c": ["1", "2"]}))
    assert table.splitlines() == [
        r"| a\|b | c |",
        "|---|---|",
        r"| x\|y | 1 |",
        r"| &lt;b&gt;\*z\*&lt;/b&gt; | 2 |",
    ]


def test_reports_never_import_torch():
    # every import of the package is at module level, so importing it is the whole check
    code = ("import sys, objbench.reports;"
            "assert 'torch' not in sys.modules, 'objbench.reports imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_reference_copy_holds_the_text_and_tables_but_no_figures(report, tmp_path):
    root, _ = report
    with pytest.warns(ReportWarning):
        build_report(root, n_boot=200, reference=tmp_path / "ref")
    assert sorted(p.name for p in (tmp_path / "ref").iterdir()) == [
        "comparisons.csv", "report.md", "summary.csv", "verdict.csv"]
    copy = (tmp_path / "ref" / "report.md").read_text()
    original = (root / "report.md").read_text()
    assert "![" not in copy and "figures/primary.png" in copy
    assert copy.split("## Figures")[0] == original.split("## Figures")[0]
    assert pd.read_csv(tmp_path / "ref" / "summary.csv").equals(pd.read_csv(root / "summary.csv"))


def test_score_kinds_are_labelled_and_an_arm_without_a_score_is_not_applicable(tmp_path):
    """Runs record how zero-shot tasks scored sentences; an arm whose objective has none (ELECTRA)
    reports scoring_not_applicable instead of acc_sum, and the primary table says so."""
    root = write_study(tmp_path / "toy")
    kinds = {"mlm": "pseudo", "clm": "none", EVIL_ARM: "bound"}
    for arm, kind in kinds.items():
        for seed in SEEDS:
            run = root / "runs" / arm / f"seed{seed}"
            status = json.loads((run / "status.json").read_text())
            (run / "status.json").write_text(json.dumps({**status, "score_kind": kind}))
            if kind == "none" and (run / "results.jsonl").exists():
                rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()
                        if line.strip().endswith("}")]
                rows = [r if r["metric"] != "acc_sum" else {**r, "metric": "scoring_not_applicable", "value": 1.0,
                                                            "higher_is_better": False} for r in rows]
                _jsonl(run / "results.jsonl", rows)
                items = [json.loads(line) for line in (run / "items.jsonl").read_text().splitlines()]
                _jsonl(run / "items.jsonl", [i for i in items if i["metric"] != "acc_sum"])
    with pytest.warns(ReportWarning):
        build_report(root, n_boot=200)
    table = _table_after((root / "report.md").read_text(), "## Primary results")
    header, *rows = table
    by_result = {row[0]: dict(zip(header, row)) for row in rows if row[0] != "---"}
    assert by_result["sentence score"]["mlm"] == "pseudo" and by_result["sentence score"]["clm"] == "none"
    assert by_result["sentence score"][md_escape(EVIL_ARM)] == "bound"
    agreement = next(v for k, v in by_result.items() if k.startswith("agreement"))
    assert agreement["clm"] == "not applicable: no score this task reads"
    assert agreement["mlm"][0].isdigit()
