"""Issue 23, item 5: one error family.

Every error cfcore raises on purpose is a `cfcore.CfcoreError` subclass that keeps its built-in
base, so `except cfcore.CfcoreError` catches every refusal and `except ValueError` code keeps
working. The source walk below fails on any `raise <built-in exception>(...)` in cfcore/ or
backends/ outside a short allow-list; the behaviour tests check a few of the refusals that were
converted, through the public calls that reach them.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import cfcore
import cfcore.errors
import cfcore.eval.implicit
import cfcore.eval.metrics
import cfcore.reference
from cfcore.errors import (
    ArgumentTypeError,
    ArgumentValueError,
    CfcoreError,
    NotSupportedError,
)

from ..conftest import load_backend

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("cfcore", "backends")

BUILTIN_ERRORS = frozenset(
    name
    for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, BaseException)
)

# (file, function) -> (the built-in raised there, why it is not a refusal). Keyed by the
# function's qualified name, not by line, so edits elsewhere in a file do not disturb it; only
# that built-in is allowed there (another raise in the same function is still caught).
ALLOW: dict[tuple[str, str], tuple[str, str]] = {
    ("cfcore/backend/bound.py", "BoundBackend.__getattr__"): (
        "AttributeError",
        "the attribute protocol: getattr()/hasattr() expect AttributeError for a missing member",
    ),
    ("backends/cfcore_jax/sharding.py", "JaxRowSharding.barrier"): (
        "RuntimeError",
        "an invariant of a JAX collective (a broken runtime), not a refusal of any input",
    ),
    ("cfcore/models/base.py", "Model._spec_from_dict"): (
        "NotImplementedError",
        "abstract method: every registered model class overrides it",
    ),
    ("cfcore/models/base.py", "Model._checked_inputs"): (
        "NotImplementedError",
        "abstract fit hook: every model class overrides it (FactorModel, SoftmaxModel)",
    ),
    ("cfcore/models/base.py", "Model._initial_params"): (
        "NotImplementedError",
        "abstract fit hook: every model class overrides it (FactorModel, SoftmaxModel)",
    ),
    ("cfcore/models/base.py", "Model._plan"): (
        "NotImplementedError",
        "abstract fit hook: every concrete model class overrides it",
    ),
    ("cfcore/models/base.py", "Model._own_state"): (
        "NotImplementedError",
        "abstract method: every registered model class overrides it",
    ),
    ("cfcore/models/base.py", "Model._restore_own"): (
        "NotImplementedError",
        "abstract method: every registered model class overrides it",
    ),
    ("cfcore/models/factor.py", "FactorModel._host_layouts"): (
        "NotImplementedError",
        "abstract hook: only reached through _layouts, which models that override it call",
    ),
    ("cfcore/models/factor.py", "FactorModel._loss"): (
        "NotImplementedError",
        "abstract hook of the generic fold-in: a model that folds in through it overrides it",
    ),
    ("cfcore/models/factor.py", "FactorModel._fold_in_batch"): (
        "NotImplementedError",
        "abstract hook of the generic fold-in: a model that folds in through it overrides it",
    ),
    ("cfcore/backend/sharding.py", "RowSharding.put"): (
        "NotImplementedError",
        "abstract primitive: each backend's row sharding overrides it",
    ),
    ("cfcore/backend/sharding.py", "RowSharding.per_device"): (
        "NotImplementedError",
        "abstract primitive: each backend's row sharding overrides it",
    ),
    ("cfcore/backend/sharding.py", "RowSharding.fetch_rows"): (
        "NotImplementedError",
        "abstract primitive: each backend's row sharding overrides it",
    ),
    **{
        ("cfcore/tuning/space.py", f"Distribution.{name}"): (
            "NotImplementedError",
            "abstract method: each kind of search-space value overrides it",
        )
        for name in ("sample", "suggest", "corners")
    },
}

# Files still being converted: file -> the number of bare built-in raises it may hold (outside
# ALLOW). A file must not gain any; an entry whose file is clean must be removed. Empty: every
# file of cfcore/ and backends/ is converted.
PENDING: dict[str, int] = {}


def _raised_builtin(node: ast.Raise) -> str | None:
    """The built-in exception `node` raises by name (`raise ValueError(...)`, `raise
    builtins.KeyError`), else None: a bare re-raise, a caught exception re-raised by its
    variable, or any class not a built-in."""
    exc = node.exc
    if exc is None:
        return None
    target = exc.func if isinstance(exc, ast.Call) else exc
    if isinstance(target, ast.Name):
        name = target.id
    elif (
        isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "builtins"
    ):
        name = target.attr
    else:
        return None
    return name if name in BUILTIN_ERRORS else None


def _bare_raises(path: Path) -> list[tuple[str, str, int]]:
    """(qualified function name or "<module>", built-in name, line) of each bare raise in `path`."""
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(child, (*scope, child.name))
                continue
            if isinstance(child, ast.Raise) and (name := _raised_builtin(child)):
                found.append((".".join(scope) or "<module>", name, child.lineno))
            visit(child, scope)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), ())
    return found


def _violations() -> tuple[dict[str, list[str]], set[tuple[str, str]]]:
    """Per file, the bare raises outside ALLOW ("file:line function: Name"); and the ALLOW
    keys that matched a raise."""
    out: dict[str, list[str]] = {}
    used: set[tuple[str, str]] = set()
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for func, name, line in _bare_raises(path):
                allowed = ALLOW.get((rel, func))
                if allowed is not None and allowed[0] == name:
                    used.add((rel, func))
                    continue
                out.setdefault(rel, []).append(f"{rel}:{line} {func}: raise {name}")
    return out, used


def test_walker_sees_bare_raises(tmp_path):
    # The walk must find what it is looking for, else the checks below pass vacuously.
    src = tmp_path / "m.py"
    src.write_text(
        "import builtins\n"
        "class A:\n"
        "    def f(self):\n"
        "        raise ValueError('x')\n"
        "def g():\n"
        "    raise builtins.KeyError\n"
        "def h(err):\n"
        "    try:\n"
        "        pass\n"
        "    except OSError:\n"
        "        raise\n"
        "    raise err\n"
    )
    assert _bare_raises(src) == [("A.f", "ValueError", 4), ("g", "KeyError", 6)]


def test_no_bare_builtin_raise_outside_the_allow_list():
    violations, _ = _violations()
    unexpected = [v for f, vs in violations.items() if f not in PENDING for v in vs]
    assert not unexpected, (
        "raise a cfcore.errors class that keeps the built-in base (e.g. ArgumentValueError for "
        "ValueError), or add the function to ALLOW with its reason:\n" + "\n".join(unexpected)
    )


def test_pending_files_gain_no_bare_raise():
    violations, _ = _violations()
    grown = {
        f: (len(violations.get(f, [])), n)
        for f, n in PENDING.items()
        if len(violations.get(f, [])) > n
    }
    assert not grown, "\n".join(
        f"{f}: {got} bare raises, PENDING allows {n}:\n  " + "\n  ".join(violations[f])
        for f, (got, n) in grown.items()
    )


def test_pending_entries_are_still_pending():
    violations, _ = _violations()
    clean = [f for f in PENDING if not violations.get(f)]
    assert not clean, f"no bare raise is left in {clean}: remove them from PENDING"


def test_allow_list_entries_are_still_needed():
    _, used = _violations()
    stale = sorted(set(ALLOW) - used)
    assert not stale, f"ALLOW entries that match no raise any more: {stale}"


def _cfcore_error_classes() -> set[type]:
    for info in pkgutil.walk_packages(cfcore.__path__, "cfcore."):
        if not info.name.endswith(".__main__"):  # that one runs the CLI
            importlib.import_module(info.name)
    seen: set[type] = set()
    todo = [CfcoreError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen and sub.__module__.startswith("cfcore"):
                seen.add(sub)
                todo.append(sub)
    return seen


def test_every_cfcore_error_keeps_a_builtin_base():
    builtin = {getattr(builtins, n) for n in BUILTIN_ERRORS} - {Exception, BaseException}
    classes = _cfcore_error_classes()
    assert {ArgumentValueError, NotSupportedError} <= classes
    lacking = sorted(c.__qualname__ for c in classes if not builtin & set(c.__mro__))
    assert not lacking, f"CfcoreError subclasses without a built-in base: {lacking}"


def test_every_error_class_is_exported_from_cfcore():
    # `except cfcore.NotFittedError` must work without knowing the module cfcore.errors.
    public = {
        name: cls
        for name, cls in vars(cfcore.errors).items()
        if isinstance(cls, type) and issubclass(cls, CfcoreError) and not name.startswith("_")
    }
    assert {"CfcoreError", "NotSupportedError", "NotFittedError"} <= set(public)
    missing = sorted(name for name, cls in public.items() if getattr(cfcore, name, None) is not cls)
    assert not missing, f"cfcore/__init__.py does not re-export {missing}"


# ---------------------------------------------------------------------------- converted refusals


def _ratings_valued(value: float) -> cfcore.Ratings:
    users = np.array([0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 1, 2, 0, 3])
    return cfcore.Ratings(users, items, np.full(6, value, np.float32), 3, 4)


def _ratings() -> cfcore.Ratings:
    return _ratings_valued(1.0)


@pytest.mark.parametrize(
    "call, cls, base, match",
    [
        pytest.param(
            lambda: cfcore.get_backend("numpy").value_and_grad(lambda p: 0.0),
            NotSupportedError,
            NotImplementedError,
            "no automatic differentiation",
            id="numpy-value_and_grad",
        ),
        pytest.param(
            lambda: cfcore.eval.metrics.recall_at_k(np.array([1, 2]), [[1]]),
            ArgumentValueError,
            ValueError,
            "top_items must be a 2-D int array",
            id="recall-1d",
        ),
        pytest.param(
            lambda: cfcore.eval.implicit.strong_generalization_split("ratings", heldout_share=0.2),
            ArgumentTypeError,
            TypeError,
            "ratings must be a cfcore.Ratings",
            id="split-not-ratings",
        ),
        pytest.param(
            lambda: cfcore.reference.init_optimizer_state("nope", {}),  # type: ignore[arg-type]
            ArgumentTypeError,
            TypeError,
            "unknown optimizer 'nope'",
            id="reference-optimizer",
        ),
        pytest.param(
            lambda: cfcore.WALS(solver="nope"),
            ArgumentValueError,
            ValueError,
            r"solver must be one of \('auto', 'cholesky', 'cg'\), got 'nope'",
            id="wals-solver",
        ),
        pytest.param(
            lambda: cfcore.IALS(embedding_dim=2).fit(
                _ratings_valued(-1.0), steps=1, backend="numpy", progress=False
            ),
            ArgumentValueError,
            ValueError,
            "iALS interaction counts must be >= 0, got -1",
            id="ials-negative-counts",
        ),
        pytest.param(
            lambda: cfcore.MatrixFactorization(2).fit(
                _ratings(),
                steps=1,
                optimizer=cfcore.optimizers.SGD(1.0),
                backend="numpy",
                progress=False,
            ),
            NotSupportedError,
            NotImplementedError,
            "no automatic differentiation",
            id="numpy-gradient-fit",
        ),
    ],
)
def test_converted_refusals_are_cfcore_errors_with_their_builtin_base(call, cls, base, match):
    with pytest.raises(cls, match=match) as info:
        call()
    assert isinstance(info.value, CfcoreError) and isinstance(info.value, base)


def test_fit_on_zero_devices_is_a_cfcore_error():
    load_backend("jax")
    model = cfcore.WALS(embedding_dim=2)
    with pytest.raises(ArgumentValueError, match=r"devices=0 but the JAX backend has") as info:
        model.fit(_ratings(), steps=1, backend="jax", devices=0, progress=False)
    assert isinstance(info.value, ValueError)


def test_fit_on_devices_where_the_backend_cannot_shard_is_a_cfcore_error():
    load_backend("torch")
    model = cfcore.WALS(embedding_dim=2)
    with pytest.raises(
        NotSupportedError, match=r"devices=1\) is not yet supported on backend 'torch'"
    ) as info:
        model.fit(_ratings(), steps=1, backend="torch", devices=1, progress=False)
    assert isinstance(info.value, NotImplementedError)


def test_nan_divergence_is_a_cfcore_error():
    load_backend("jax")
    model = cfcore.MatrixFactorization(embedding_dim=2, init_stddev=0.5)
    with pytest.raises(CfcoreError, match="NaN or infinite at step") as info:
        model.fit(
            _ratings_valued(5.0), steps=200, optimizer=cfcore.optimizers.SGD(1e4),
            backend="jax", progress=False,
        )  # fmt: skip
    assert isinstance(info.value, cfcore.TrainingDivergedError)
    assert isinstance(info.value, FloatingPointError)


# ---------------------------------------------------------------------------- degenerate iALS


def _ratings_without(side: str) -> cfcore.Ratings:
    """`_ratings()`'s positives over one more user (side "user": user 3 has none) or one more
    item (side "item": item 4 has none)."""
    r = _ratings()
    n, m = (4, 4) if side == "user" else (3, 5)
    return cfcore.Ratings(r.users, r.items, r.values, n, m)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
@pytest.mark.parametrize("side, row", [("user", "user 3"), ("item", "item 4")])
def test_ials_without_unobserved_weight_refuses_rows_without_positives(solver, side, row):
    # With α₀ = 0 and ν > 0 such a row's regularization λ·(0 + 0)^ν is 0 for any λ: its system
    # is all zeros, so raising the regularization cannot help. The refusal names the row and
    # the options that do, before any sweep runs.
    model = cfcore.IALS(embedding_dim=2, unobserved_weight=0.0, solver=solver)
    with pytest.raises(ArgumentValueError, match=rf"{row}\b.*no positives") as info:
        model.fit(_ratings_without(side), steps=2, backend="numpy", progress=False)
    message = str(info.value)
    assert "unobserved_weight" in message and "regularization_exponent" in message
    assert "Raise the regularization" not in message
    assert len(model.history) == 0


@pytest.mark.parametrize(
    "kwargs, side",
    [
        ({"unobserved_weight": 0.0, "regularization_exponent": 0.0}, "user"),  # λ·1 > 0
        ({"unobserved_weight": 0.1}, "user"),  # λ·(0 + α₀·M)^ν > 0
        ({"unobserved_weight": 0.0}, None),  # every row has a positive
    ],
)
def test_ials_fits_when_every_row_is_regularized(kwargs, side):
    # What the refusal above must not catch.
    data = _ratings_without(side) if side else _ratings()
    model = cfcore.IALS(embedding_dim=2, solver="cholesky", **kwargs)
    history = model.fit(data, steps=2, backend="numpy", progress=False)
    assert np.isfinite(history["total_loss"]).all()
    assert np.isfinite(model.embeddings_numpy()["user"]).all()


def test_ials_fold_in_of_a_new_user_without_positives_names_the_cause():
    # The same cause as the refusal of `fit`, not "the row regularization must be > 0, got 0",
    # which points at a reg the caller never passed.
    model = cfcore.IALS(embedding_dim=2, unobserved_weight=0.0, solver="cholesky")
    model.fit(_ratings(), steps=1, backend="numpy", progress=False)
    new = cfcore.Ratings(np.array([0]), np.array([1]), np.ones(1, np.float32), 2, 4)
    with pytest.raises(ArgumentValueError, match=r"new user 1\b.*no positives") as info:
        model.fold_in(new, backend="numpy")
    message = str(info.value)
    assert "unobserved_weight=0" in message and "reg=" in message
    assert "must be finite" not in message
    # An explicit λ > 0 regularizes every row: the user without positives folds in (at 0).
    rows = model.fold_in(new, reg=0.1, backend="numpy")
    assert np.isfinite(rows).all() and not rows[1].any()
