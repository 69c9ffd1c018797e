"""`subagent-telemetry report` on real Prometheus scraping the demo, looked at in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import open_page, screenshot_dir
from tests.support.demo import DemoStack, demo_scraped_by_prometheus
from tests.support.servers import prom_query, wait_for

pytestmark = pytest.mark.integration

CHARTS = 7


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, DemoStack, float]]:
    """A report over the demo's last 2 minutes, made once an alert has fired and a few scrapes exist."""
    tmp = tmp_path_factory.mktemp("report")
    with demo_scraped_by_prometheus(tmp) as stack:
        firing = 'ALERTS{alertname="SubagentQuotaRejections", alertstate="firing"}'
        wait_for(lambda: prom_query(stack.prometheus.url, firing), timeout_seconds=60)
        time.sleep(3)
        end = time.time()
        out = tmp / "out"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "subagent_telemetry.cli",
                "report",
                stack.prometheus.url,
                "--window",
                "2m",
                "--end",
                str(end),
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        yield out, stack, end


class TestReport:
    def test_renders_in_chromium_without_console_errors(self, report: tuple[Path, DemoStack, float]) -> None:
        """The page opens in headless Chromium with no console error, uncaught exception or failed load."""
        out, _, _ = report
        with open_page((out / "index.html").as_uri(), width=1100) as page:
            assert page.evaluate("document.title") == "Subagent report"
            shot = page.screenshot(out / "report.png")
            assert page.console_errors == []
        assert shot.stat().st_size > 10_000
        if (shots := screenshot_dir()) is not None:
            shutil.copy(shot, shots / "report.png")

    def test_every_chart_is_present_and_decoded(self, report: tuple[Path, DemoStack, float]) -> None:
        """Each chart is an image the browser decoded (non-zero size), and each is also a PNG file."""
        out, _, _ = report
        with open_page((out / "index.html").as_uri()) as page:
            widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) == CHARTS
        assert all(w > 0 for w in widths)
        pngs = sorted((out / "charts").glob("*.png"))
        assert len(pngs) == CHARTS
        assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)

    def test_is_self_contained(self, report: tuple[Path, DemoStack, float]) -> None:
        """Nothing is loaded from elsewhere: no script, stylesheet or image URL, only inline data."""
        text = (report[0] / "index.html").read_text()
        assert re.search(r"""(src|href)=["'](?!data:)""", text) is None
        assert "<script" not in text

    def test_totals_are_prometheus_increases_over_the_window(
        self, report: tuple[Path, DemoStack, float]
    ) -> None:
        """The 'all' row's executions equal Prometheus' increase over the same window and end."""
        out, stack, end = report
        expected = prom_query(
            stack.prometheus.url, "sum(increase(subagent_executions_total[120s]))", time_unix_seconds=end
        )
        text = (out / "index.html").read_text()
        shown = re.search(r'id="total-executions">([\d,]+)<', text)
        assert shown is not None
        assert int(shown.group(1).replace(",", "")) == round(float(expected[0]["value"][1]))
        assert int(shown.group(1).replace(",", "")) > 0

    def test_lists_the_alerts_that_fired(self, report: tuple[Path, DemoStack, float]) -> None:
        """An alert of the rendered rules that fired in the window is listed by name."""
        text = (report[0] / "index.html").read_text()
        assert "<td>SubagentQuotaRejections</td>" in text
