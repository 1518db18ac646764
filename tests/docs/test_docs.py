"""The README and the documentation pages say what the code does: the README stays short, its
links lead somewhere, its test commands are CI's, and the pages' Python examples run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ..conftest import DATA_DIR, require_backend

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_LIMIT = 10_000
# Pages whose examples run here, each page's blocks in order in one namespace. Left out: the
# compilation-cache page (it would move this process's cache) and multi-device (its examples
# split the CPU into devices or start processes, which tests/sharding/test_sharding*.py do in their own).
EXAMPLE_PAGES = [
    "README.md",
    "docs/user-guide.md",
    "docs/models/matrix-factorization.md",
    "docs/models/als.md",
    "docs/models/biased.md",
    "docs/models/bpr.md",
    "docs/models/softmax.md",
    "docs/tuning.md",
]
QUICK_STEPS = 3


def _python_blocks(path: Path) -> list[str]:
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", path.read_text(), flags=re.S | re.M)
    return [re.sub(rf"^{indent}", "", body, flags=re.M) for indent, body in blocks]


def _links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)


def test_the_readme_is_short() -> None:
    assert len(README.read_text()) <= README_LIMIT


def test_the_readme_links_lead_to_files_in_the_repository() -> None:
    links = [x for x in _links(README.read_text()) if "://" not in x]
    assert links
    missing = [x for x in links if not (ROOT / x).exists()]
    assert missing == []


def test_the_readme_names_the_commands_ci_runs() -> None:
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [line for line in ci if re.fullmatch(r"make [a-z-]+", line)]
    assert commands  # .ci/run ends with make lint, make test
    readme = README.read_text()
    for command in commands:
        assert re.search(rf"^{command}\b", readme, flags=re.M), command


@pytest.mark.slow
@pytest.mark.parametrize("page", EXAMPLE_PAGES)
def test_the_page_examples_run(page, ml100k_files, tmp_path, monkeypatch) -> None:
    for name in ("jax", "tf"):
        require_backend(name)
    blocks = _python_blocks(ROOT / page)
    assert blocks, page
    monkeypatch.setenv("CFCORE_DATA_DIR", str(DATA_DIR))
    monkeypatch.chdir(tmp_path)  # the examples write runs/... and read my_ratings.csv
    (tmp_path / "my_ratings.csv").write_text("title,rating\nAladdin (1992),5\nFargo (1996),2\n")
    namespace: dict = {}
    for i, block in enumerate(blocks):
        # The documented step and draw counts, cut to a few: this checks the calls, not the fit.
        quick = re.sub(r"\b(steps|samples)=\d+", rf"\1={QUICK_STEPS}", block)
        code = compile(quick, f"{page}, python block {i + 1}", "exec")
        exec(code, namespace)  # noqa: S102  (the documentation's own examples)
