"""Every HTML page cfcore writes, opened offline in a real browser (the system's headless Chromium).

A page passes when each of its charts drew: an SVG with axes and data marks in the DOM, no error
in the browser's console, and a screenshot of the chart that is not blank. The browser is cut off
from the network (every host name resolves to nothing), so a page that loads its JavaScript from
a CDN, as Altair's default pages do, renders nothing: `test_a_cdn_page_renders_nothing_offline`
shows that these checks catch it.

Chromium comes from the OS packages (`apt-get install chromium chromium-driver`, as `.ci/run`
does) and selenium drives it through the system's chromedriver: nothing downloads a browser.
Without them the tests skip, saying why; with `CFCORE_REQUIRE_BROWSER=1` (set by `.ci/run`) they
fail instead.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ..conftest import DATA_DIR, load_backend

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("CFCORE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CFCORE_CHROMEDRIVER", "/usr/bin/chromedriver"))
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # Offline: no host name resolves, so a page can only use what is inside it.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--window-size=1400,1000",
)
RENDER_TIMEOUT_S = 30.0
# A drawn chart covers a good part of its box with axes, labels and marks; an empty one is white.
MIN_INK = 0.02


def _missing() -> str | None:
    """Why the browser cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} not found (apt-get install {package}, as .ci/run does)"
    return None


@pytest.fixture(scope="module")
def browser():
    why = _missing()
    if why:
        if os.environ.get("CFCORE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{why}; CFCORE_REQUIRE_BROWSER=1 requires the browser tests to run")
        pytest.skip(f"browser tests skipped: {why}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="cfcore-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Both paths given: selenium's own manager never looks for (or downloads) a browser.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Chart:
    """What the browser made of one chart of a page."""

    heading: str
    svg: bool
    axes: int
    marks: int
    ink: float  # fraction of the chart's screenshot that is not white


@dataclass
class Rendered:
    charts: list[Chart]
    errors: list[str] = field(default_factory=list)


_STATE = """
return Array.from(document.querySelectorAll('script.cfcore-spec')).map((s) => {
  const div = document.getElementById(s.dataset.target);
  const svg = div && div.querySelector('svg.marks');
  return {
    heading: s.dataset.heading,
    svg: !!svg,
    failed: !!div && div.classList.contains('cfcore-error'),
    axes: svg ? svg.querySelectorAll('g.role-axis').length : 0,
    marks: svg ? svg.querySelectorAll('g.role-mark > path, g.role-mark > g > path').length : 0,
  };
});
"""


def _ink(png: bytes) -> float:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    return float(np.mean(img < 235)) if img.size else 0.0


def open_page(driver, path: Path) -> Rendered:
    """Opens `path` from disk and waits until every chart drew, failed, or the time ran out."""
    from selenium.webdriver.common.by import By

    driver.get_log("browser")  # drop what an earlier page logged
    driver.get(path.resolve().as_uri())
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    while True:
        state = driver.execute_script(_STATE)
        done = state and all((s["svg"] and s["marks"]) or s["failed"] for s in state)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    time.sleep(0.5)  # let late errors reach the console
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    charts = []
    for s in state:
        ink = 0.0
        if s["svg"]:
            box = driver.find_element(By.CSS_SELECTOR, f"#{_target(driver, s['heading'])}")
            ink = _ink(box.screenshot_as_png)
        charts.append(Chart(s["heading"], s["svg"], s["axes"], s["marks"], ink))
    return Rendered(charts, errors)


def _target(driver, heading: str) -> str:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('script.cfcore-spec'))"
        ".find((s) => s.dataset.heading === arguments[0]).dataset.target",
        heading,
    )


def assert_rendered(result: Rendered, headings: list[str], min_axes: int = 2) -> None:
    """Every expected chart drew: SVG, axes, marks, ink on screen; and the console is clean."""
    assert [c.heading for c in result.charts] == headings
    assert not result.errors, result.errors
    for c in result.charts:
        assert c.svg, f"{c.heading!r} drew no SVG"
        assert c.axes >= min_axes, f"{c.heading!r} has {c.axes} axes"
        assert c.marks >= 1, f"{c.heading!r} has no data marks"
        assert c.ink >= MIN_INK, f"{c.heading!r} looks blank: {c.ink:.1%} of it is not white"


# ---------------------------------------------------------------------------- the pages


def _cli(*args: str) -> None:
    from cfcore.cli import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, (result.output, result.exception)


@pytest.fixture(scope="module")
def run_dir(ml100k, tmp_path_factory) -> Path:
    """A short `cfcore train` run: its report.html, history and embeddings."""
    load_backend("jax")
    out = tmp_path_factory.mktemp("run")
    _cli(
        *("train", "--data-dir", str(DATA_DIR), "--out", str(out), "--no-progress"),
        *("--backend", "jax", "--steps", "30", "--dim", "8"),
    )
    return out


def test_train_report_renders_offline(browser, run_dir: Path) -> None:
    result = open_page(browser, run_dir / "report.html")
    assert_rendered(result, ["training curves", "embedding norm against number of ratings"])


def test_explore_report_renders_offline(browser, ml100k, tmp_path: Path) -> None:
    _cli("explore", "--data-dir", str(DATA_DIR), "--out", str(tmp_path), "--no-png")
    result = open_page(browser, tmp_path / "report.html")
    assert_rendered(result, ["ratings per user, by occupation", "ratings per movie, by genre"])


@pytest.mark.slow  # one t-SNE of 1,682 movies: 10-20 s
def test_plot_report_renders_offline(browser, run_dir: Path, tmp_path: Path) -> None:
    _cli(
        *("plot", "--history", str(run_dir / "history.csv")),
        *("--embeddings", str(run_dir / "embeddings.npz"), "--label", "run"),
        *("--data-dir", str(DATA_DIR), "--out", str(tmp_path), "--no-png", "--no-progress"),
        *("--tsne-iter", "250", "--perplexity", "10"),
    )
    result = open_page(browser, tmp_path / "report.html")
    assert_rendered(
        result,
        [
            f"training curves: {run_dir.name}",
            "embedding norm against number of ratings",
            "t-SNE of the item embeddings: run",
        ],
    )


def _history() -> pd.DataFrame:
    step = np.arange(0, 60, 10)
    return pd.DataFrame({"step": step, "train_mse": 4 / (1 + step), "test_mse": 5 / (1 + step)})


def test_a_saved_chart_renders_offline(browser, tmp_path: Path) -> None:
    from cfcore import viz

    page = viz.save_chart(viz.training_curves_chart(_history()), tmp_path / "curves.html")
    result = open_page(browser, page)
    assert_rendered(result, ["curves"])


def test_a_cdn_page_renders_nothing_offline(browser, tmp_path: Path) -> None:
    # What every page was before the libraries went inline: the checks above must catch it.
    from cfcore import viz

    page = viz.save_chart(
        viz.training_curves_chart(_history()), tmp_path / "curves.html", inline=False
    )
    result = open_page(browser, page)
    assert [c.svg for c in result.charts] == [False]
    assert any("cdn.jsdelivr.net" in e for e in result.errors), result.errors
    with pytest.raises(AssertionError):
        assert_rendered(result, ["curves"])
