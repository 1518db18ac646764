"""`import cfcore` imports no framework; selecting a backend imports that framework only.

Each check runs in a fresh interpreter, since this test process has long since imported both.

TensorFlow itself imports jax when jax is installed (`tensorflow/lite/python/util.py` does
`from jax import jit`), so for the TF backend the check is that cfcore adds nothing to what a bare
`import tensorflow` imports: neither optax nor the JAX backend module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cfcore

from ..conftest import _require_all

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[2]
# optuna too: only a TPE search (`cfcore.tune(..., search="tpe")`) may import it.
FRAMEWORKS = ("jax", "jaxlib", "optax", "tensorflow", "keras", "cfcore_jax", "cfcore_tf", "optuna")

# Records, for each framework, the module that first imported it (import machinery skipped).
# A lookup by importlib.util.find_spec (which imports nothing) is not an import: only calls made
# under importlib's _find_and_load count.
SPY = f"""
import sys

class _Spy:
    first = {{}}

    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in {FRAMEWORKS!r} and top not in self.first:
            f, loading = sys._getframe(1), False
            while f is not None and (
                f.f_code.co_filename.startswith("<frozen")
                or f.f_globals.get("__name__", "").split(".")[0] == "importlib"
            ):
                loading = loading or f.f_code.co_name == "_find_and_load"
                f = f.f_back
            if loading:
                self.first[top] = None if f is None else f.f_globals.get("__name__")
        return None

sys.meta_path.insert(0, _Spy())
"""

REPORT = f"""
import json
frameworks = {FRAMEWORKS!r}
print(json.dumps({{
    "imported": sorted({{m.split(".")[0] for m in sys.modules if m.split(".")[0] in frameworks}}),
    "importers": _Spy.first,
}}))
"""

CORE_USE = """
import numpy as np
import cfcore
import cfcore.cli
import cfcore.datasets
import cfcore.optimizers
import cfcore.reference
import cfcore.testing
m = cfcore.RegularizedMF(embedding_dim=4, init_stddev=0.1)
mf = cfcore.MatrixFactorization(embedding_dim=3)
r = cfcore.Ratings(np.array([0, 1]), np.array([1, 0]), np.array([4.0, 5.0]), 2, 2)
train, test = cfcore.Ratings([0, 1, 1, 0], [0, 1, 0, 1], [1.0, 2.0, 3.0, 4.0], 2, 2).split(0.5)
opt = cfcore.optimizers.SGD(1.0)
space = {"regularization_coeff": cfcore.tune.loguniform(1e-3, 1.0)}
plan = cfcore.tuning.plan_search(cfcore.WALS, space, search="random", trials=2)
assert cfcore.available_backends(), cfcore.available_backends()
assert "jax" in cfcore.backend.registry.known_backends()
"""


def _start(code: str, **env: str) -> subprocess.Popen:
    """Starts `code` then REPORT in a fresh interpreter."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env)
    if "CFCORE_BACKEND" not in env:
        full_env.pop("CFCORE_BACKEND", None)
    return subprocess.Popen(
        [sys.executable, "-c", SPY + code + REPORT],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"subprocess failed:\n{out}\n{err}"
    return json.loads(out.strip().splitlines()[-1])


def _imported(code: str, **env: str) -> list[str]:
    """The frameworks (and backend modules) that a fresh interpreter has imported after `code`."""
    return _result(_start(code, **env))["imported"]


def _require(name: str) -> None:
    """Skips (fails in CI) without the backend, checked without importing its framework here."""
    if name not in cfcore.available_backends():
        msg = f"backend {name!r} is not installed (pip install 'cfcore[{name}]')"
        if _require_all():
            pytest.fail(msg + "; CI requires every backend")
        pytest.skip(msg)


def test_import_cfcore_imports_no_framework() -> None:
    assert _imported(CORE_USE) == []


def test_default_backend_is_jax_and_imports_only_jax() -> None:
    _require("jax")
    code = CORE_USE + "be = cfcore.get_backend()\nassert be.name == 'jax', be.name\n"
    imported = _imported(code)
    # optax is imported only when an optax optimizer is passed to fit.
    assert "jax" in imported and "optax" not in imported
    assert "tensorflow" not in imported and "keras" not in imported


def test_get_backend_jax_imports_only_jax() -> None:
    _require("jax")
    code = CORE_USE + "be = cfcore.get_backend('jax')\nassert be.name == 'jax', be.name\n"
    imported = _imported(code, CFCORE_BACKEND="tf")  # the argument wins over the environment
    assert {"jax", "jaxlib", "cfcore_jax"} <= set(imported) and "optax" not in imported
    assert not {"tensorflow", "keras", "cfcore_tf"} & set(imported), imported


def test_env_tf_imports_only_tensorflow() -> None:
    _require("tf")
    code = CORE_USE + "be = cfcore.get_backend()\nassert be.name == 'tf', be.name\n"
    report = _result(_start(code, CFCORE_BACKEND="tf"))
    imported, importers = report["imported"], report["importers"]
    assert {"tensorflow", "cfcore_tf"} <= set(imported)
    assert "optax" not in imported and "cfcore_jax" not in imported, imported
    assert importers["cfcore_tf"] == "cfcore.backend.registry"
    assert importers["tensorflow"] == "cfcore_tf"
    # TensorFlow may import jax on its own when it is installed; cfcore must not.
    for module in ("jax", "jaxlib", "keras"):
        if module in importers:
            assert importers[module].split(".")[0] in ("tensorflow", "keras", "jax"), importers


def test_spy_names_the_importer() -> None:
    report = _result(_start("import cfcore\ncfcore.get_backend('jax')\n"))
    assert report["importers"]["cfcore_jax"] == "cfcore.backend.registry"
    assert report["importers"]["jax"] == "cfcore_jax"


def test_failed_selection_imports_nothing() -> None:
    code = CORE_USE + (
        "try:\n    cfcore.get_backend('nope')\n"
        "except cfcore.BackendError:\n    pass\n"
        "else:\n    raise SystemExit('no error')\n"
    )
    assert _imported(code) == []


# Modules that `import cfcore` and every cfcore module below must leave unimported: the
# frameworks (imported by the backends when selected) and the plotting and t-SNE libraries
# (imported by `cfcore.viz` functions when called). torch is not a dependency at all.
HEAVY = ("jax", "tensorflow", "torch", "matplotlib", "altair", "sklearn")
LIGHT_MODULES = (
    "cfcore",
    "cfcore.cli",
    "cfcore.data.exploration",
    "cfcore.data.features",
    "cfcore.data.user_ratings",
    "cfcore.eval.metrics",
    "cfcore.eval.popularity",
    "cfcore.io.atomic",
    "cfcore.viz",
    "cfcore.exploration",
    "cfcore.metrics",
)


def test_cfcore_modules_import_no_heavy_library() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {LIGHT_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
        "assert not heavy, f'imported {heavy}'\n"
    )
    assert _imported(code) == []
