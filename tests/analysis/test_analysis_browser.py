"""The HTML report in a real headless browser (Playwright + Debian's chromium)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contagion.analysis.report import write_report
from tests.analysis.sim_runs import PageWatch


@pytest.fixture(scope="module")
def report_file(payload_run_dir: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(payload_run_dir[0], tmp_path_factory.mktemp("report") / "report.html")


def test_report_renders_its_figures_without_errors(browser: Any, report_file: Path, tmp_path: Path) -> None:
    watch = PageWatch(browser)
    try:
        page = watch.page
        page.goto(report_file.as_uri())
        page.wait_for_selector("figure svg")
        figures = page.locator("figure svg")
        assert figures.count() >= 4
        for i in range(figures.count()):
            svg = figures.nth(i)
            box = svg.bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 100
            assert svg.locator("path, image, use").count() > 5  # axes, marks, lines or the heat map were drawn
            assert svg.locator("text").count() > 5  # labels are text
        # the numbers behind a figure are one click away
        details = page.locator("#drift details").last
        row = details.locator("tbody tr").first
        was_open = row.is_visible()
        details.locator("summary").click()
        assert row.is_visible() != was_open
        # the failed game's error (model text) is shown, not run
        assert "<script>window.pwned" in page.locator("#failures pre").first.inner_text()
        assert page.evaluate("window.pwned") is None
        assert page.evaluate("document.scripts.length") == 0
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        assert watch.errors == []
    finally:
        watch.close()
