"""Bad inputs and faults tried against cfcore, grouped by kind, for the reliability table (docs/reliability.md).

`run_all(workdir)` tries every case and records what it got: a cfcore error (its class), a
documented non-error outcome (`"NaN"`, or `"ok"` for a case that checks its own
result), or anything else (a bug: the test fails on it).
`tests/reliability/test_edge_inputs.py` asserts every case gets its expected outcome;
`benchmarks/reliability_table.py` prints the table from the same run, so the counts are measured.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import cfcore
from cfcore.optimizers import SGD, Adam


@dataclass(frozen=True)
class Case:
    kind: str
    label: str
    run: Callable[[Path], Any]
    # "error": a CfcoreError; "nan": a NaN result (documented); "ok": `run` ran and returned
    # True (it checks the result itself, against a run without the fault).
    expect: str = "error"


def _ratings(n_users: int = 30, n_items: int = 20) -> cfcore.Ratings:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(n_users), 6)
    items = rng.integers(0, n_items, size=len(users))
    return cfcore.Ratings(users, items, rng.integers(1, 6, size=len(users)), n_users, n_items)


_MODEL: list[Any] = []


def _model() -> Any:
    if not _MODEL:
        m = cfcore.MatrixFactorization(embedding_dim=4, init_stddev=0.5)
        m.fit(_ratings(), steps=3, optimizer=SGD(1.0), backend="jax", progress=False)
        _MODEL.append(m)
    return _MODEL[0]


def _fit(**kwargs: Any) -> Any:
    args = {"steps": 2, "optimizer": SGD(1.0), "backend": "jax", "progress": False} | kwargs
    return cfcore.MatrixFactorization(3).fit(_ratings(), **args)


def _saved(d: Path) -> Path:
    return _model().save(d / "good.npz")


def _write(d: Path, name: str, data: bytes) -> Path:
    p = d / name
    p.write_bytes(data)
    return p


def _crafted(d: Path) -> Path:
    """A model file whose user embeddings declare 64 MiB (zeros: tiny on disk)."""
    arrays = dict(np.load(_saved(d)))
    out = d / "crafted.npz"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in arrays.items():
            with zf.open(k + ".npy", "w", force_zip64=True) as f:
                if k == "user_embeddings":
                    header = {"descr": "<f4", "fortran_order": False, "shape": (1 << 22, 4)}
                    np.lib.format.write_array_header_1_0(f, header)
                    for _ in range(64):
                        f.write(bytes(1 << 20))
                else:
                    np.lib.format.write_array(f, v)
    return out


def _pickled(d: Path) -> Path:
    p = d / "pickled.npz"
    with zipfile.ZipFile(p, "w") as zf:
        with zf.open("metadata.npy", "w") as f:
            np.lib.format.write_array(f, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    return p


def _device(be_name: str, x: Any, dtype: str) -> Any:
    return cfcore.get_backend(be_name).asarray(np.asarray(x), dtype)


def _device_mse(be_name: str, bad: int) -> Any:
    be = cfcore.get_backend(be_name)
    u = np.ones((4, 3), np.float32)
    out = be.sparse_mse(
        u,
        u,
        _device(be_name, [0, bad], "int32"),
        _device(be_name, [0, 1], "int32"),
        _device(be_name, [1.0, 2.0], "float32"),
    )
    return float(be.to_numpy(out))


def _data_variant(d: Path, data_dir: Path, mutate: Callable[[list[str]], list[str]]) -> Any:
    src = data_dir / "ml-100k"
    dst = d / f"ml-100k-{len(list(d.iterdir()))}"
    dst.mkdir()
    for name in ("u.item", "u.user"):
        (dst / name).write_bytes((src / name).read_bytes())
    lines = (src / "u.data").read_text().splitlines()
    (dst / "u.data").write_text("\n".join(mutate(lines)) + "\n")
    return cfcore.datasets.load_movielens("100k", data_dir=dst)


def _release_zip(
    d: Path, ratings: str | int = "1::1::5::978300760\n", movies: str | int = ""
) -> Any:
    """Loads a minimal ml-1m zip; a member given as an int is that many MiB of NUL bytes."""
    files = {
        "ratings.dat": ratings,
        "movies.dat": movies or "1::Toy Story (1995)::Animation\n",
        "users.dat": "1::F::1::10::48067\n",
    }
    path = d / f"ml-1m-{len(list(d.iterdir()))}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            with zf.open(f"ml-1m/{name}", "w", force_zip64=True) as f:
                if isinstance(content, int):
                    for _ in range(content):
                        f.write(bytes(1 << 20))
                else:
                    f.write(content.encode(errors="surrogateescape"))  # "\udcff": byte 0xff
    return cfcore.datasets.load_movielens("1m", data_dir=path, verify=False)


def cases(data_dir: Path | None = None) -> list[Case]:
    """Every case; the data-file ones only when a MovieLens 100K copy is under `data_dir`."""
    r = _ratings
    out = [
        # Argument types and values: the shared validator.
        Case("argument types", "split(holdout_fraction='0.1')", lambda d: r().split("0.1")),
        Case("argument types", "split(seed='0')", lambda d: r().split(0.1, seed="0")),
        Case("argument types", "embedding_dim=True", lambda d: cfcore.MatrixFactorization(True)),
        Case("argument types", "embedding_dim=4.0", lambda d: cfcore.MatrixFactorization(4.0)),
        Case("argument types", "embedding_dim='3'", lambda d: cfcore.MatrixFactorization("3")),
        Case(
            "argument types",
            "init_stddev='0.1'",
            lambda d: cfcore.MatrixFactorization(3, init_stddev="0.1"),
        ),
        Case("argument types", "SGD('10')", lambda d: SGD("10")),
        Case("argument types", "SGD(True)", lambda d: SGD(True)),
        Case("argument types", "Adam(b1='0.9')", lambda d: Adam(0.1, b1="0.9")),
        Case("argument types", "fit(steps='10')", lambda d: _fit(steps="10")),
        Case("argument types", "fit(steps=True)", lambda d: _fit(steps=True)),
        Case("argument types", "fit(batch_size=True)", lambda d: _fit(batch_size=True)),
        Case("argument types", "fit(seed=1.5)", lambda d: _fit(seed=1.5)),
        Case("argument types", "fit(backend=123)", lambda d: _fit(backend=123)),
        Case("argument values", "embedding_dim=0", lambda d: cfcore.MatrixFactorization(0)),
        Case("argument values", "SGD(nan)", lambda d: SGD(float("nan"))),
        Case("argument values", "split(holdout_fraction=1.0)", lambda d: r().split(1.0)),
        Case("argument values", "fit(steps=0)", lambda d: _fit(steps=0)),
        # Sizes: refused with an estimate before allocating.
        Case(
            "sizes and memory",
            "embedding_dim=10**9 (fit)",
            lambda d: cfcore.MatrixFactorization(10**9).fit(
                _ratings(1000, 2000), steps=1, optimizer=SGD(1.0), backend="jax", progress=False
            ),
        ),
        Case(
            "sizes and memory",
            "num_users=2**40",
            lambda d: cfcore.Ratings([0], [0], [4.0], num_users=2**40, num_items=5),
        ),
        Case(
            "sizes and memory",
            "user id 2**32+3 (num_users=2**32+5)",
            lambda d: cfcore.Ratings([2**32 + 3], [0], [4.0], num_users=2**32 + 5, num_items=5),
        ),
        Case(
            "sizes and memory",
            "crafted .npz declaring 64 MiB in 70 KiB",
            lambda d: cfcore.load(_crafted(d)),
        ),
        # Index arrays given to the functional losses.
        Case(
            "index arrays",
            "float indices [0.0, 1.5]",
            lambda d: cfcore.get_backend("jax").sparse_mse(
                np.ones((4, 3)), np.ones((4, 3)), [0.0, 1.5], [0, 1], [1.0, 2.0]
            ),
        ),
        Case(
            "index arrays",
            "host user index 7 of 4",
            lambda d: cfcore.get_backend("jax").sparse_mse(
                np.ones((4, 3)), np.ones((4, 3)), [0, 7], [0, 1], [1.0, 2.0]
            ),
        ),
        Case(
            "index arrays",
            "predict(user 9 of 30)",
            lambda d: _model().predict([9, 99], [0, 0]),
        ),
    ]
    for be in ("jax", "tf", "torch"):
        if be in cfcore.available_backends():
            for bad in (7, -1):
                out.append(
                    Case("index arrays", f"{be} device index {bad}", lambda d, be=be, bad=bad: _device_mse(be, bad), "nan")
                )  # fmt: skip
    out += [
        # Model files.
        Case("model files", "missing file", lambda d: cfcore.load(d / "nope.npz")),
        Case("model files", "a folder", lambda d: cfcore.load(d)),
        Case("model files", "empty file", lambda d: cfcore.load(_write(d, "e.npz", b""))),
        Case(
            "model files",
            "truncated model",
            lambda d: cfcore.load(_write(d, "t.npz", _saved(d).read_bytes()[:-200])),
        ),
        Case(
            "model files",
            "random bytes",
            lambda d: cfcore.load(_write(d, "r.npz", os.urandom(4096))),
        ),
        Case(
            "model files",
            "a single .npy",
            lambda d: cfcore.load(
                _write(d, "s.npz", b"\x93NUMPY\x01\x00" + b"v" * 118 + b"\n" + bytes(8))
            ),
        ),
        Case("model files", "pickled object member", lambda d: cfcore.load(_pickled(d))),
        Case(
            "model files",
            "a pickle file",
            lambda d: cfcore.load(_write(d, "p.npz", pickle.dumps({"a": 1}))),
        ),
        # Output paths.
        Case("output paths", "save('')", lambda d: _model().save("")),
        Case("output paths", "save(path with NUL)", lambda d: _model().save(str(d / "a\0b"))),
        Case("output paths", "save(a folder)", lambda d: _model().save(d)),
        Case(
            "output paths",
            "save(path under a file)",
            lambda d: _model().save(_write(d, "f", b"x") / "m.npz"),
        ),
        # New users and recommendations.
        Case(
            "fold-in and retrieval",
            "fold_in(reg=0, one rating)",
            lambda d: _model().fold_in({0: 4.0}, reg=0, backend="numpy"),
        ),
        Case(
            "fold-in and retrieval",
            "fold_in(rating 99 outside the scale)",
            lambda d: _model().fold_in({0: 99.0}, backend="numpy"),
        ),
        Case(
            "fold-in and retrieval",
            "recommend(unknown user 'zzz')",
            lambda d: cfcore.retrieval.recommend(_model(), "zzz", backend="numpy"),
        ),
        Case(
            "fold-in and retrieval",
            "recommend(k=0)",
            lambda d: cfcore.retrieval.recommend(_model(), 0, k=0, backend="numpy"),
        ),
        Case(
            "fold-in and retrieval",
            "add_users(user id already taken)",
            lambda d: cfcore.load(_saved(d)).add_users({0: 4.0}, user_ids=[3], backend="numpy"),
        ),
    ]
    good = "1::1::5::978300760\n"
    out += [
        Case("archives", "zip: movies.dat of 64 MiB NUL bytes", lambda d: _release_zip(d, movies=64)),
        Case("archives", "zip: ratings.dat of 64 MiB NUL bytes", lambda d: _release_zip(d, 64)),
        Case("archives", "zip: ratings.dat one 20 MiB line", lambda d: _release_zip(d, 20)),
        Case("archives", "ratings.dat: a fifth field", lambda d: _release_zip(d, good + "2::1::4::9::9\n")),
        Case("archives", "ratings.dat: rating -5", lambda d: _release_zip(d, good + "2::1::-5::9\n")),
        Case("archives", "ratings.dat: rating 4.5 in 1m", lambda d: _release_zip(d, good + "2::1::4.5::9\n")),
        Case("archives", "ratings.dat: 'x' between colons", lambda d: _release_zip(d, good + "2::1::4:x:9\n")),
        Case("archives", "ratings.dat: invalid UTF-8", lambda d: _release_zip(d, good + "2::1::\udcff::9\n")),
        Case("archives", "ratings.dat: empty", lambda d: _release_zip(d, "\n")),
    ]  # fmt: skip
    if data_dir is not None and (data_dir / "ml-100k" / "u.data").exists():
        mutations = {
            "u.data: 'abc' item id": lambda L: L[:2] + ["196\tabc\t3\t881250949"] + L[2:],
            "u.data: extra column on one line": lambda L: L[:4] + [L[4] + "\t7"] + L[5:],
            "u.data: extra column on every line": lambda L: [x + "\t7" for x in L],
            "u.data: NA rating": lambda L: L[:6] + ["196\t242\tNA\t881250949"] + L[6:],
            "u.data: 2-field line": lambda L: L[:6] + ["196\t242"] + L[6:],
        }
        for label, mutate in mutations.items():
            out.append(Case("data files", label, lambda d, m=mutate: _data_variant(d, data_dir, m)))
        out.append(
            Case(
                "data files",
                "dataset name '/nonexistent'",
                lambda d: cfcore.datasets.load_movielens("/nonexistent"),
            )
        )
    from .edge_surfaces import surface_cases  # it builds on this module's helpers

    return out + surface_cases(data_dir)


@dataclass(frozen=True)
class Outcome:
    case: Case
    got: str  # "CfcoreError subclass name", "nan", "ok", "accepted", or "other: Type: message"

    @property
    def ok(self) -> bool:
        if self.case.expect in ("nan", "ok"):
            return self.got == self.case.expect
        return not self.got.startswith(("other", "accepted", "nan", "ok"))

    @property
    def error(self) -> bool:
        """A clear cfcore error, as expected."""
        return self.ok and self.case.expect == "error"


def run_case(case: Case, workdir: Path) -> Outcome:
    d = workdir / f"case{abs(hash(case.label)) % 10**8}"
    d.mkdir(parents=True, exist_ok=True)
    try:
        value = case.run(d)
    except cfcore.CfcoreError as err:
        return Outcome(case, type(err).__name__)
    except Exception as err:  # anything else is a finding
        return Outcome(case, f"other: {type(err).__name__}: {err}")
    if isinstance(value, float) and np.isnan(value):
        return Outcome(case, "nan")
    if value is True and case.expect == "ok":
        return Outcome(case, "ok")
    return Outcome(case, "accepted")


def run_all(workdir: Path, data_dir: Path | None = None) -> list[Outcome]:
    return [run_case(c, workdir) for c in cases(data_dir)]


def table(outcomes: list[Outcome]) -> str:
    """The reliability table: per kind of input, how many were tried and what they got."""
    kinds: dict[str, list[Outcome]] = {}
    for o in outcomes:
        kinds.setdefault(o.case.kind, []).append(o)
    lines = [
        "| inputs | tried | clear cfcore error | documented NaN | correct result | other "
        "| errors seen |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]

    def counts(outs: list[Outcome]) -> list[int]:
        return [
            len(outs),
            sum(o.error for o in outs),
            sum(o.ok and o.got == "nan" for o in outs),
            sum(o.ok and o.got == "ok" for o in outs),
            sum(not o.ok for o in outs),
        ]

    for kind, outs in kinds.items():
        errors = sorted({o.got for o in outs if o.error})
        cells = " | ".join(str(n) for n in counts(outs))
        lines.append(
            f"| {kind} (e.g. {outs[0].case.label}) | {cells} "
            f"| {', '.join(f'`{e}`' for e in errors)} |"
        )
    cells = " | ".join(f"**{n}**" for n in counts(outcomes))
    lines.append(f"| **all** | {cells} | |")
    return "\n".join(lines)
