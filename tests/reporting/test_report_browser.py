"""The report in a real browser (headless Chromium): it loads with no console errors and
every picture has a size; a screenshot is kept under pytest's tmp folder, and copied to
``tests/reporting/artifacts/`` when ``TEACHERKIT_TEST_ARTIFACTS`` is set.

Chromium comes from the Debian package ``chromium`` (``apt-get install -y chromium``);
without it these tests skip and say so."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from teacherkit.reporting.report import build_report

CHROMIUM = next((p for p in (os.environ.get("TEACHERKIT_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p and Path(p).is_file()), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no headless browser: install Debian's 'chromium' (apt-get install -y chromium) to run this test")
ARTIFACTS = Path(__file__).parent / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)


def load(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after the page's load handler ran, and the console messages Chromium logged."""
    run = chromium(page, profile, "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0", "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line or "CONSOLE(" in line]
    return run.stdout, console


def status(dom: str) -> dict[str, str]:
    tag = re.search(r'<p[^>]*id="report-status"[^>]*>', dom).group(0)
    return dict(re.findall(r'data-([a-z]+)="([^"]*)"', tag))


def test_the_report_loads_cleanly_in_chromium(experiment, tmp_path):
    root, _facts = experiment
    page = tmp_path / "report.html"
    page.write_text(build_report(root), encoding="utf-8")
    dom, console = load(page, tmp_path / "profile-dom")
    assert console == [], console
    state = status(dom)
    assert state["loaded"] == "yes" and state["errors"] == "0" and state["broken"] == "0"
    sizes = re.findall(r'<img [^>]*data-natural-width="(\d+)" data-natural-height="(\d+)"', dom)
    assert len(sizes) == int(state["images"]) == dom.count("<img ") == 11
    assert all(int(w) > 0 and int(h) > 0 for w, h in sizes)
    shot = tmp_path / "report.png"
    run = chromium(page, tmp_path / "profile-shot", "--window-size=1280,2000", f"--screenshot={shot}")
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    with Image.open(shot) as img:
        assert img.size == (1280, 2000)
        assert len(img.convert("L").getcolors(maxcolors=1 << 16) or [0] * 99) > 16  # not a blank page
    if os.environ.get("TEACHERKIT_TEST_ARTIFACTS"):
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "report.png")


def test_the_checks_see_a_broken_page(tmp_path):
    """The same checks fail on a page with a script error and an undecodable picture."""
    page = tmp_path / "broken.html"
    good = build_report(tmp_path)  # an empty folder still gives a page (with its status script)
    page.write_text(good.replace("</body>", '<img src="data:image/png;base64,AAAA"><script>missing();</script></body>'))
    dom, console = load(page, tmp_path / "profile")
    assert any("missing is not defined" in line for line in console)
    state = status(dom)
    assert state["broken"] == "1" and state["errors"] == "1"
