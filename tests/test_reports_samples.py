"""The report shows the generation task's samples side by side per prompt, escaped."""

from __future__ import annotations

import json

import pytest

from objbench.reports import build_report
from objbench.reports.load import ReportWarning
from objbench.tasks.base import SAMPLES_FILE
from tests.test_reports_render import ARMS, SEEDS, write_study

EVIL = "<script>alert(1)</script> | **bold**"


def test_samples_of_every_arm_sit_beside_the_prompt_and_are_escaped(tmp_path):
    root = write_study(tmp_path / "toy", items=False)
    for arm in ARMS:
        for seed in SEEDS:
            run = root / "runs" / arm / f"seed{seed}"
            if json.loads((run / "status.json").read_text())["state"] != "done":
                continue
            (run / SAMPLES_FILE).write_text("".join(
                json.dumps({"item": str(i), "prompt": f"prompt {i}", "truth": f"truth {i}",
                            "sample": f"{arm} seed {seed} says {EVIL} {i}"}) + "\n" for i in range(8)))
    with pytest.warns(ReportWarning):
        build_report(root, n_boot=200)
    markdown = (root / "report.md").read_text()
    section = markdown.split("## Generated text", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| prompt")]
    assert len(rows) == 6  # the 5 shown prompts and the header
    assert section.count("seed 0 says") == 5 * len(ARMS) and "seed 1 says" not in section  # lowest seed
    assert "<script>" not in section and "\\| \\*\\*bold\\*\\*" in section
    assert "&lt;script&gt;alert(1)&lt;/script&gt; | **bold**" in (root / "report.html").read_text()


def test_no_samples_no_section(tmp_path):
    root = write_study(tmp_path / "plain", items=False)
    with pytest.warns(ReportWarning):
        build_report(root, n_boot=200)
    assert "Generated text" not in (root / "report.md").read_text()
