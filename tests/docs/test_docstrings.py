"""Runs the docstring examples (`>>>`) of every `cfcore` module, as `python -m doctest` would.

An example is a promise to the reader: these tests keep every one of them true. Examples that
load MovieLens read the shared copy (`CFCORE_DATA_DIR` points at it for the run), exactly the call
a user writes; the few that cannot run here (they write files, or train for minutes) say so next
to their `# doctest: +SKIP`.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from types import ModuleType

import pytest

import cfcore

from ..conftest import DATA_DIR, _require_all, load_backend

# Ellipsis stands for numbers that vary (timings, float noise) and for long frames.
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _examples(module: ModuleType) -> list[doctest.DocTest]:
    # Only the module's own objects: re-exported names are checked where they are defined.
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module.__name__)
    return [t for t in tests if t.examples]


def _modules() -> list[str]:
    """Every module of the package that holds examples, under its own name.

    `__main__` files are left out (importing one runs the CLI), and so are aliases such as
    `cfcore.backend.registry` (the same module object as `cfcore.backend.registry`).
    """
    names = ["cfcore"]
    for info in pkgutil.walk_packages(cfcore.__path__, "cfcore."):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            names.append(info.name)
    modules = [importlib.import_module(n) for n in names]
    return sorted(
        m.__name__ for m, n in zip(modules, names, strict=True) if m.__name__ == n and _examples(m)
    )


MODULES = _modules()


def test_the_walk_finds_the_examples() -> None:
    """The walk reaches subpackages and the modules known to hold examples (not a vacuous run)."""
    expected = {"cfcore.backend.checks", "cfcore.data.bags", "cfcore.eval.metrics", "cfcore.specs"}
    assert expected <= set(MODULES), MODULES
    assert len(MODULES) >= 10, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tests = _examples(importlib.import_module(name))
    if any("load_movielens(" in ex.source for t in tests for ex in t.examples):
        if not (DATA_DIR / "ml-100k" / "u.data").exists():
            msg = f"{name}'s examples read MovieLens; no copy under {DATA_DIR}"
            if _require_all():
                pytest.fail(msg)
            pytest.skip(msg)
        # The call a user writes (`load_movielens("100k")`) reads this copy, never the network.
        monkeypatch.setenv("CFCORE_DATA_DIR", str(DATA_DIR))
    if any(".fit(" in ex.source for t in tests for ex in t.examples):
        load_backend("jax")  # the default backend trains; skipped without it, failed in CI
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
    # Every module keeps at least one example that really runs (not all `+SKIP`).
    assert result.attempted > 0, f"every example of {name} is skipped"
