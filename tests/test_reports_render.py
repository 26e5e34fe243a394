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

XSS = "<script>alert(1)</script>"
# a folder name cannot hold '/', so the arm name plants markup without one, plus mathtext `$`
EVIL_ARM = "<img src=x onerror=alert(1)>$x$"
ARMS = {"mlm": 0.0, "clm": 0.05, EVIL_ARM: 0.0}  # planted accuracy gain on agreement items
SEEDS = (0, 1, 2)
N_ITEMS = 300
LAYERS = (0, 1, 2)
PHENOMENA = ("anaphor", "subj_verb")
BUDGET = 4096.0


def _jsonl(path: Path, rows: list[dict], truncate_last: bool = False) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if truncate_last:
        text = text[: -len(json.dumps(rows[-1])) // 2 - 1]  # half of the last line, no newline
    path.write_text(text, encoding="utf-8")


def _result(arm: str, seed: int, point: float, final: bool, task: str, metric: str,
            value: float, higher: bool = True, layer: int | None = None,
            group: str | None = None, n: int = N_ITEMS) -> dict:
    return {
        "study": "toy", "arm": arm, "objective": arm, "options": "{}", "seed": seed,
        "budget_axis": "tokens", "budget_value": point, "step": int(point // 64),
        "tokens": point, "flops": point * 1e6, "task": task, "metric": metric, "split": "test",
        "layer": layer, "pooling": "mean" if layer is not None else None, "group": group,
        "value": value, "n": n, "higher_is_better": higher, "final": final,
    }


def write_study(root: Path, items: bool = True, phenomena: bool = True) -> Path:
    """3 arms x 3 seeds; EVIL_ARM seed 2 failed; one results file ends in a truncated line."""
    rng = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    (root / "study.yaml").write_text(yaml.safe_dump({
        "name": f"toy {XSS}", "reference": "mlm", "arms": list(ARMS), "seeds": list(SEEDS),
        "budget": {"axis": "tokens", "value": BUDGET},
    }))
    (root / "provenance.json").write_text(json.dumps({
        "objbench": "0.1.0", "git_commit": "abc123", "packages": {"numpy": np.__version__},
        "hardware": XSS, "data_hash": "d41d8cd9",
    }))
    difficulty = rng.uniform(size=N_ITEMS)
    for arm, gain in ARMS.items():
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
                final = point == BUDGET
                accuracy = 0.6 + gain + 0.1 * (point / BUDGET) + rng.normal(0, 0.005)
                correct = (difficulty + rng.normal(0, 0.03, N_ITEMS) < accuracy).astype(float)
                rows.append(_result(arm, seed, point, final, "val_loss", "loss",
                                    3.0 - 0.2 * point / BUDGET + rng.normal(0, 0.02), False))
                rows.append(_result(arm, seed, point, final, "agreement", "acc_sum",
                                    float(correct.mean())))
                item_rows += [{"arm": arm, "seed": seed, "budget_value": point,
                               "task": "agreement", "metric": "acc_sum", "layer": None,
                               "item": f"i{i}", "value": float(v)}
                              for i, v in enumerate(correct)]
                if phenomena:
                    rows += [_result(arm, seed, point, final, "agreement", "acc_sum",
                                     float(correct[k::2].mean()), group=g, n=N_ITEMS // 2)
                             for k, g in enumerate(PHENOMENA)]
                for layer in LAYERS:
                    probe = 0.7 + 0.05 * layer + gain + rng.normal(0, 0.01)
                    rows.append(_result(arm, seed, point, final, "sentiment", "probe_acc",
                                        probe, layer=layer))
                    rows.append(_result(arm, seed, point, final, "sentiment", "selectivity",
                                        probe - 0.5, layer=layer))
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
                "comparisons.csv", "noise_floor.csv"}
    expected |= {f"figures/{name}.{ext}" for ext in ("png", "svg") for name in
                 ("learning_curves", "probe_vs_budget", "probe_layers", "phenomena", "summary")}
    assert set(written) == expected
    assert all(path.is_file() and path.stat().st_size > 0 for path in written.values())
    assert all(path.parent in (root, root / "figures") for path in written.values())


def test_failed_run_is_listed_with_its_error(report):
    root, _ = report
    markdown = (root / "report.md").read_text()
    rows = _table_after(markdown, "## Failed runs")
    assert rows[0] == ["arm", "seed", "state", "error"]
    assert rows[2:] == [[md_escape(EVIL_ARM), "2", "failed", md_escape(f"OOM {XSS}")]]
    assert "OOM &lt;script&gt;alert(1)&lt;/script&gt;" in (root / "report.html").read_text()


def test_html_is_self_contained_and_escaped(report):
    root, _ = report
    page = (root / "report.html").read_text()
    for forbidden in ("http://", "https://", 'src="http', "<script", "<img src=x", "//cdn"):
        assert forbidden not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # name, error, provenance
    assert "&lt;img src=x onerror=alert(1)&gt;$x$" in page
    assert page.count('src="data:image/png;base64,') == 5


def test_markdown_main_table_shape(report):
    root, _ = report
    rows = _table_after((root / "report.md").read_text(), "## Final results")
    header, rule, body = rows[0], rows[1], rows[2:]
    assert header == ["task", "metric", "split", "layer", "pooling", "group", "arm", "mean ± std",
                      "95% CI (t)", "95% CI (bootstrap)", "n seeds", "noise sd"]
    assert rule == ["---"] * len(header)
    assert all(len(row) == len(header) for row in body)
    # keys: val_loss, agreement overall + 2 phenomena, 2 probe metrics x 3 layers; 3 arms each
    assert len(body) == (1 + 1 + len(PHENOMENA) + 2 * len(LAYERS)) * len(ARMS)
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
    tested = table["p"].notna()
    assert (table.loc[tested, "p_holm"] >= table.loc[tested, "p"]).all()
    assert not table.loc[~tested, "significant"].any()


def test_results_csv_keeps_every_row_with_nulls_restored(report):
    root, _ = report
    results = pd.read_csv(root / "results.csv")
    parquet = pd.read_parquet(root / "results.parquet")
    assert len(results) == len(parquet)
    # 8 done runs x 2 points x (2 val/agreement + 2 phenomena + 6 probe rows); clm seed 1 lost
    # its truncated last line, which was a duplicate of its first row
    assert len(results) == 8 * 2 * 10
    assert results.loc[results["task"] == "val_loss", "layer"].isna().all()
    assert set(results["run_state"]) == {"done"}


def test_missing_data_skips_figures_and_says_so(tmp_path):
    root = write_study(tmp_path / "plain", items=False, phenomena=False)
    with pytest.warns(ReportWarning):
        written = build_report(root, n_boot=500)
    assert "figures/phenomena.png" not in written
    markdown = (root / "report.md").read_text()
    assert "Minimal-pair accuracy by phenomenon: skipped, no results broken down" in markdown
    comparisons = pd.read_csv(root / "comparisons.csv")
    assert set(comparisons["paired_over"]) == {"seeds"}


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


def test_baseline_verdicts_in_words():
    from objbench.reports.document import Table, _baselines

    summary = pd.DataFrame({
        "task": "s", "arm": ["a", "a", "b", "c", "a"], "metric": ["probe_acc"] * 4 + ["majority_acc"],
        "layer": [0, 1, 0, 0, -1], "pooling": ["cls", "cls", "mean", "cls", ""],
        "mean": [0.70, 0.75, 0.62, 0.50, 0.60], "ci_low": [0.65, 0.72, 0.58, 0.45, 0.60],
        "ci_high": [0.75, 0.78, 0.66, 0.55, 0.60],
    })
    table = next(b for b in _baselines(summary) if isinstance(b, Table)).frame.set_index("arm")
    assert table.loc["a", "best probe"] == "layer 1 cls"
    assert list(table["verdict"]) == ["above, CI excludes it", "above on the mean only", "NOT above"]
