"""report.html as a person sees it: rendered by headless Chromium at 1,400 px wide.

The report itself carries no script. The test renders a copy with a measuring script appended,
which writes what the browser laid out (positions, image sizes, cell overflow) into the page;
Chromium's --dump-dom hands that back. A screenshot is saved beside it for a person to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from objbench.reports import build_report
from objbench.reports.load import ReportWarning
from tests.test_reports_render import write_study

WIDTH, FIRST_SCREEN = 1400, 1200
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

MEASURE = """
<script>
window.addEventListener("load", () => {
  const top = el => el ? el.getBoundingClientRect().top + window.scrollY : null;
  const bottom = el => el ? el.getBoundingClientRect().bottom + window.scrollY : null;
  const heading = text => [...document.querySelectorAll("h2")].find(h => h.textContent === text);
  const primary = heading("Primary results");
  const table = primary ? primary.nextElementSibling : null;
  const out = {
    verdict_top: top(heading("Verdict")),
    verdict_bottom: bottom(document.querySelector(".callout")),
    primary_table_bottom: table && table.tagName === "TABLE" ? bottom(table) : null,
    images: [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
    overflowing: [...document.querySelectorAll("td, th")]
      .filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.textContent.slice(0, 60)),
    page_overflow: document.documentElement.scrollWidth > window.innerWidth,
  };
  const pre = document.createElement("pre");
  pre.id = "measured";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""

pytestmark = pytest.mark.slow  # headless Chromium renders a whole report: ~7 s


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--window-size={WIDTH},{FIRST_SCREEN}", "--virtual-time-budget=10000", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    if CHROMIUM is None:
        if os.environ.get("OBJBENCH_REQUIRE_BROWSER"):
            pytest.fail("OBJBENCH_REQUIRE_BROWSER is set but no chromium is installed "
                        "(apt-get install chromium)")
        pytest.skip("no chromium on PATH (apt-get install chromium); .ci/run installs it")
    root = write_study(tmp_path_factory.mktemp("browser") / "toy")
    with pytest.warns(ReportWarning):
        build_report(root, n_boot=200)
    page = (root / "report.html").read_text()
    measured = root / "measured.html"
    measured.write_text(page.replace("</body>", MEASURE + "</body>"))
    dom = _chromium("--dump-dom", measured.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout.split('<pre id="measured">', 1)[1].split("</pre>", 1)[0]
    screenshot = root / "first-screen.png"
    _chromium(f"--screenshot={screenshot}", (root / "report.html").as_uri())
    return json.loads(text.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                      .replace("&gt;", ">")), screenshot


def test_verdict_and_primary_table_are_on_the_first_screen(rendered):
    measured, screenshot = rendered
    assert screenshot.stat().st_size > 10_000, "the screenshot of the first screen is missing"
    assert measured["verdict_top"] is not None and measured["verdict_bottom"] is not None
    assert measured["primary_table_bottom"] is not None, "no table right after 'Primary results'"
    assert measured["verdict_bottom"] < FIRST_SCREEN
    assert measured["primary_table_bottom"] < FIRST_SCREEN, \
        f"the primary table ends at {measured['primary_table_bottom']:.0f} px (see {screenshot})"


def test_every_image_decodes(rendered):
    measured, _ = rendered
    assert len(measured["images"]) == 5
    assert all(done and width > 0 and height > 0 for done, width, height in measured["images"])


def test_no_text_overflows_its_cell_or_the_page(rendered):
    measured, screenshot = rendered
    assert measured["overflowing"] == [], f"see {screenshot}"
    assert not measured["page_overflow"]
