"""ALS half-sweeps cut into concurrent parts (`cfcore.maths.als.plan_parts`, the optional backend
members `compile_parts` / `concurrent_parts`): the plan, the same rows whatever the parts (float64
reference backend with sequential parts; TensorFlow, whose parts are XLA calls of a non-XLA graph
that its executor runs at once), and the structure of TensorFlow's graph: k XLA calls of parts
that do not depend on each other."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import cfcore
from cfcore import reference as ref
from cfcore.data import row_blocks as row_blocks_module
from cfcore.data.ratings import Ratings
from cfcore.init import init_mf_params
from cfcore.maths import als as als_maths
from cfcore.maths.als import make_half_sweep, plan_parts
from cfcore.models.als import ials_blocks
from cfcore.specs import IALSSpec
from cfcore.testing.als_conformance import SWEEP_RTOL
from cfcore.testing.conformance import assert_array_close
from cfcore.train.placement import Placement

from ..conftest import require_backend

# ---------------------------------------------------------------------------- the plan


def test_plan_parts_balances_work_in_order():
    assert plan_parts([1.0] * 8, 2) == [(0, 4), (4, 8)]
    assert plan_parts([1.0] * 9, 3) == [(0, 3), (3, 6), (6, 9)]
    # The heavy first unit is a part of its own; the light ones share the other.
    assert plan_parts([6.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], 2) == [(0, 1), (1, 7)]
    # Unequal units: the cut nearest the half of the work (10 of 20 falls after unit 2).
    assert plan_parts([3.0, 7.0, 2.0, 8.0], 2) == [(0, 2), (2, 4)]


def test_plan_parts_more_parts_than_units_and_one_part():
    assert plan_parts([2.0, 5.0, 1.0], 8) == [(0, 1), (1, 2), (2, 3)]
    assert plan_parts([2.0, 5.0, 1.0], 1) == [(0, 3)]
    assert plan_parts([4.0], 3) == [(0, 1)]
    # Every unit in exactly one group, in order, whatever the parts.
    rng = np.random.default_rng(0)
    for parts in range(1, 12):
        work = list(rng.uniform(0.1, 5.0, 9))
        groups = plan_parts(work, parts)
        assert groups[0][0] == 0 and groups[-1][1] == 9
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(groups, groups[1:], strict=False))
        assert len(groups) == min(parts, 9)


# ---------------------------------------------------------------------------- core, float64


class _SequentialParts:
    """The float64 reference backend with the optional parts members: parts run one after
    another (as JAX would), and each call's number of parts is recorded."""

    def __init__(self, parts: int) -> None:
        self._base = cfcore.get_backend("numpy").ops
        self.parts = parts
        self.calls: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def concurrent_parts(self) -> int:
        return self.parts

    def compile_parts(self, fns):
        def run(*args):
            self.calls.append(len(fns))
            return [fn(*args) for fn in fns]

        return run


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few rows (buckets of many blocks), a bucket per power of two, no minimum
    work per part: a small problem cut as a large one is."""
    monkeypatch.setattr(row_blocks_module, "BLOCK_FLOATS", 16 * 16)
    monkeypatch.setattr(row_blocks_module, "MIN_BUCKET_OBS", 1)
    monkeypatch.setattr(row_blocks_module, "LADDER_STEPS", 1)
    monkeypatch.setattr(row_blocks_module, "WHOLE_FLOATS", 0)
    monkeypatch.setattr(als_maths, "MIN_PART_WORK", 0)


def _implicit(seed: int = 3) -> Ratings:
    r = cfcore.synthetic_ratings(100, 30, 800, seed=seed).to_implicit(threshold=3.0)
    counts = np.random.default_rng(2).integers(1, 4, len(r)).astype(np.float32)
    return Ratings(r.users, r.items, counts, r.num_users, r.num_items)


def _user_half(be: Any, spec: IALSSpec, r: Ratings, params: dict[str, np.ndarray]):
    """One iALS user half-sweep (with its observed loss) of `spec` on `be`: host rows, loss."""
    col = np.ones(spec.embedding_dim, np.float32)
    half = make_half_sweep(
        be, col, solver=spec.linear_solver, cg_steps=spec.cg_steps, observed=True
    )
    place = Placement(be)
    data = place.data(ials_blocks(spec, r))
    v = be.asarray(params["item"])
    prior = be.asarray(spec.unobserved_weight * params["item"].T @ params["item"])
    new, loss = half(v, be.asarray(params["user"]), data["by_user"], prior)
    return np.asarray(be.to_numpy(new), np.float64), float(be.to_numpy(loss))


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
@pytest.mark.parametrize("parts", [2, 3, 1000])
def test_parts_give_the_rows_of_one_computation_float64(small_blocks, solver, parts):
    """Cut into parts (even more than there are blocks), a half-sweep's rows and loss are the
    very ones of the uncut half-sweep (float64: every block solved by the same operations)."""
    r = _implicit()
    spec = IALSSpec(4, init_stddev=0.3, regularization_coeff=0.05, unobserved_weight=0.2,
                    regularization_exponent=0.5, confidence=0.7, solver=solver)  # fmt: skip
    params = init_mf_params(spec, r.num_users, r.num_items, 0)
    blocks = ials_blocks(spec, r)["by_user"]["buckets"]
    units = sum(1 if (b["ids"].shape[0] == 1 and solver == "cholesky") else b["ids"].shape[0]
                for b in blocks)  # fmt: skip
    assert max(b["ids"].shape[0] for b in blocks) > 3, "buckets must hold several blocks"
    whole, whole_loss = _user_half(cfcore.get_backend("numpy"), spec, r, params)
    be = _SequentialParts(parts)
    got, loss = _user_half(cfcore.get_backend(be), spec, r, params)
    assert be.calls == [min(parts, units)]
    np.testing.assert_array_equal(got, whole)
    assert loss == whole_loss


def test_one_part_is_the_uncut_half_sweep(small_blocks):
    """`concurrent_parts() == 1`: no parts at all (`compile_parts` never called)."""
    r = _implicit()
    spec = IALSSpec(4, solver="cg")
    params = init_mf_params(spec, r.num_users, r.num_items, 0)
    be = _SequentialParts(1)
    got, _ = _user_half(cfcore.get_backend(be), spec, r, params)
    whole, _ = _user_half(cfcore.get_backend("numpy"), spec, r, params)
    assert be.calls == []
    np.testing.assert_array_equal(got, whole)


def test_small_half_sweeps_are_not_cut(monkeypatch):
    """Below `MIN_PART_WORK` per part a half-sweep stays one computation (the default sizes)."""
    r = _implicit()
    spec = IALSSpec(4, solver="cg")
    params = init_mf_params(spec, r.num_users, r.num_items, 0)
    be = _SequentialParts(2)
    _user_half(cfcore.get_backend(be), spec, r, params)
    assert be.calls == [1]  # one part: the blocks' solves stay in a computation of their own


# ---------------------------------------------------------------------------- TensorFlow


def _tf(parts: int | None):
    require_backend("tf")
    from cfcore_tf import TFBackend

    be = cfcore.get_backend(TFBackend(parts=parts))
    be.strict_float32()
    return be


def _part_calls(concrete: Any) -> list[list[str]]:
    """For each function of `concrete`'s graph (the top one and its library's: a while loop's
    body), the names of its nodes that call a part's XLA program, after checking that no one
    of them depends on another in that function."""
    graph = concrete.graph.as_graph_def()
    functions = [("top", list(graph.node))] + [
        (f.signature.name, list(f.node_def)) for f in graph.library.function
    ]
    found = []
    for _, nodes in functions:
        calls = {
            n.name
            for n in nodes
            if "f" in n.attr and n.attr["f"].func.name.find("cfcore_part_") >= 0
        }
        if not calls:
            continue
        inputs = {n.name: [i.lstrip("^").split(":")[0] for i in n.input] for n in nodes}
        for call in calls:
            assert not (_ancestors(inputs, call) & calls), f"part call {call} depends on another"
        for call in calls:
            xla = [n for n in nodes if n.name == call][0]
            assert xla.attr["_XlaMustCompile"].b, f"part call {call} is not an XLA call"
        found.append(sorted(calls))
    return found


def _ancestors(inputs: dict[str, list[str]], name: str) -> set[str]:
    """The nodes `name` reads, directly or not (data and control inputs)."""
    seen: set[str] = set()
    todo = list(inputs.get(name, []))
    while todo:
        x = todo.pop()
        if x not in seen:
            seen.add(x)
            todo.extend(inputs.get(x, []))
    return seen


def _half_loop(be: Any, spec: IALSSpec, r: Ratings, params: dict[str, np.ndarray]):
    """A compiled loop of one step, an iALS user half-sweep: `(run, carry, data)`."""
    half = make_half_sweep(
        be, np.ones(spec.embedding_dim, np.float32), solver=spec.linear_solver,
        cg_steps=spec.cg_steps,
    )  # fmt: skip
    place = Placement(be)
    data = {
        "blocks": place.data(ials_blocks(spec, r))["by_user"],
        "fixed": be.asarray(params["item"]),
        "prior": be.asarray(spec.unobserved_weight * params["item"].T @ params["item"]),
    }

    def body(carry: Any, data: Any, _: Any) -> Any:
        return half(data["fixed"], carry, data["blocks"], data["prior"])

    return be.compile_loop(body), be.asarray(params["user"]), data


@pytest.mark.parametrize("parts", [2, 3])
def test_tf_graph_holds_independent_xla_parts(small_blocks, parts):
    """With k parts the loop is a non-XLA graph whose step calls k XLA programs, none reading
    another's output (so TensorFlow's executor may run them at once); its rows equal the one
    XLA program's (k = 1) bit for bit (CG: the same operations on every block)."""
    r = _implicit()
    spec = IALSSpec(4, init_stddev=0.3, regularization_coeff=0.05, unobserved_weight=0.2,
                    solver="cg")  # fmt: skip
    params = init_mf_params(spec, r.num_users, r.num_items, 0)
    be = _tf(parts)
    run, carry, data = _half_loop(be, spec, r, params)
    concrete = run.concrete_function(carry, data, num_steps=1)
    calls = _part_calls(concrete)
    assert [len(c) for c in calls] == [parts]
    got = np.asarray(be.to_numpy(run(carry, data, num_steps=1)))

    one = _tf(1)
    run1, carry1, data1 = _half_loop(one, spec, r, params)
    assert _part_calls(run1.concrete_function(carry1, data1, num_steps=1)) == []
    want = np.asarray(one.to_numpy(run1(carry1, data1, num_steps=1)))
    np.testing.assert_array_equal(got, want)


def test_tf_more_parts_than_blocks(small_blocks):
    """k above the number of blocks: as many parts as blocks (units), the same rows."""
    r = _implicit()
    spec = IALSSpec(4, solver="cg")
    params = init_mf_params(spec, r.num_users, r.num_items, 0)
    blocks = ials_blocks(spec, r)["by_user"]["buckets"]
    units = sum(int(b["ids"].shape[0]) for b in blocks)
    be = _tf(units + 50)
    run, carry, data = _half_loop(be, spec, r, params)
    calls = _part_calls(run.concrete_function(carry, data, num_steps=1))
    assert [len(c) for c in calls] == [units]
    got = np.asarray(be.to_numpy(run(carry, data, num_steps=2)))
    one = _tf(1)
    run1, carry1, data1 = _half_loop(one, spec, r, params)
    np.testing.assert_array_equal(got, np.asarray(one.to_numpy(run1(carry1, data1, num_steps=2))))


@pytest.mark.parametrize(
    ("parts", "cut_small"),
    [(1, True), (4, False)],
    ids=["one-part-small-blocks", "four-cores-default-sizes"],
)
def test_tf_loop_stays_one_xla_program(request, parts, cut_small):
    """k = 1, even on blocks small enough to cut; and any k on a half-sweep below the default
    `MIN_PART_WORK` (no host graph, no extra compilation on small data): the loop is one XLA
    program, as before parts existed."""
    if cut_small:
        request.getfixturevalue("small_blocks")
    r = _implicit()
    spec = IALSSpec(4, solver="cg")
    params = init_mf_params(spec, r.num_users, r.num_items, 0)
    run, carry, data = _half_loop(_tf(parts), spec, r, params)
    concrete = run.concrete_function(carry, data, num_steps=1)
    assert concrete.function_def.attr["_XlaMustCompile"].b
    assert _part_calls(concrete) == []


@pytest.mark.slow  # eight small TensorFlow fits, each compiled: about a minute
@pytest.mark.parametrize(
    ("kind", "solver"), [("ials", "cg"), ("ials", "cholesky"), ("wals", "cg"), ("biased", "cg")]
)
def test_tf_fit_with_parts_equals_one_part_and_the_oracle(small_blocks, kind, solver):
    """A TensorFlow fit of one sweep with 2 parts: the rows of the fit with 1 part within float32
    rounding (the Gramians of the priors, the Cholesky systems are XLA programs of their own
    there, fused apart; the CG rows of one half-sweep are equal bit for bit, see above) and of
    the float64 oracle within the ALS conformance tolerance."""
    r = cfcore.synthetic_ratings(30, 20, 300, seed=3)
    mean = 0.0
    if kind == "ials":
        r = _implicit()
        model = lambda: cfcore.IALS(4, init_stddev=0.3, regularization_coeff=0.05,  # noqa: E731
                                    unobserved_weight=0.2, solver=solver)  # fmt: skip
    elif kind == "wals":
        model = lambda: cfcore.WALS(4, init_stddev=0.5, gravity_coeff=0.5,  # noqa: E731
                                    solver=solver)  # fmt: skip
    else:
        model = lambda: cfcore.BiasedMF(4, init_stddev=0.3, regularization_coeff=0.2,  # noqa: E731
                                        gravity_coeff=0.3, solver=solver)  # fmt: skip
    got = {}
    for parts in (1, 2):
        m = model()
        m.fit(r, steps=1, backend=_tf(parts), progress=False, seed=0)
        got[parts] = {k: np.asarray(v, np.float64) for k, v in m.embeddings_numpy().items()}
    for k in got[1]:
        assert_array_close(got[2][k], got[1][k], 1e-6, f"{kind} {k}: 2 parts vs 1")
    spec = model().spec
    if kind == "biased":
        mean = float(np.mean(r.values.astype(np.float64)))
        params = {k: v.astype(np.float64) for k, v in _biased_init(spec, r).items()}
        want = ref.biased_als_sweep(spec, params, r.users, r.items, r.values, mean)
    else:
        params = init_mf_params(spec, r.num_users, r.num_items, 0)
        sweep = ref.ials_sweep if kind == "ials" else ref.wals_sweep
        want = sweep(spec, params, r.users, r.items, r.values)
    for k in want:
        assert_array_close(got[2][k], want[k], SWEEP_RTOL, f"{kind} {solver} {k} vs float64")


def _biased_init(spec: Any, r: Ratings) -> dict[str, np.ndarray]:
    from cfcore.models.biased_parts import init_biased_params

    return init_biased_params(spec, r.num_users, r.num_items, 0)


def test_tf_parts_argument_is_checked():
    require_backend("tf")
    from cfcore_tf import TFBackend

    for bad in (0, -1, 2.5, True, "2"):
        with pytest.raises(ValueError, match=r"parts must be None .* or an int >= 1, got"):
            TFBackend(parts=bad)  # type: ignore[arg-type]
    assert TFBackend(parts=3).parts == 3 and TFBackend().parts is None


@pytest.mark.parametrize("name", ["numpy", "jax", "tf"])
def test_compile_map_over_a_range(name):
    """`compile_map(fn)(data, xs, start, stop)` maps items `start` to `stop` − 1 only (a part's
    blocks of a bucket), and refuses an empty or out-of-range one."""
    if name == "numpy":
        be = cfcore.get_backend("numpy")
    else:
        require_backend(name)
        be = cfcore.get_backend(name)
    xs = {"a": be.asarray(np.arange(12.0).reshape(4, 3))}
    run = be.compile_map(lambda data, x: be.xp.sum(x["a"]) * data)
    np.testing.assert_allclose(be.to_numpy(run(be.asarray(2.0), xs)), [6.0, 24.0, 42.0, 60.0])
    np.testing.assert_allclose(be.to_numpy(run(be.asarray(2.0), xs, 1, 3)), [24.0, 42.0])
    for start, stop in ((2, 2), (-1, 2), (0, 5)):
        with pytest.raises(ValueError, match=r"range must satisfy 0 <= start < stop <= 4"):
            run(be.asarray(2.0), xs, start, stop)
