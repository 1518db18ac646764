"""The edge inputs of the surfaces added by issue 23, for `tests/_support/edge_inputs.py`'s table.

Compilation cache, sharded checkpoints, ALS arguments, archives and signals: each case is an
input a new user might try, with the outcome it must get (a cfcore error, or `"ok"` for a
case that must run and give the right result, checked by the case itself).
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

import cfcore

from .edge_inputs import Case, _model, _ratings, _release_zip, _write

_ROOT = Path(__file__).resolve().parents[2]
_GOOD = "1::1::5::978300760\n"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_ROOT), str(_ROOT / "backends")])
    return env


# ---------------------------------------------------------------------------- compilation cache

_FIT_SCRIPT = """
import sys, numpy as np, cfcore
from cfcore.optimizers import SGD
if sys.argv[1]:
    cfcore.enable_compilation_cache(sys.argv[1])
rng = np.random.default_rng(0)
users = np.repeat(np.arange(30), 6)
items = rng.integers(0, 20, size=len(users))
r = cfcore.Ratings(users, items, rng.integers(1, 6, size=len(users)), 30, 20)
m = cfcore.MatrixFactorization(3)
m.fit(r, steps=3, optimizer=SGD(1.0), backend="jax", progress=False)
sys.stdout.buffer.write(b"".join(np.asarray(v).tobytes() for v in m.params_numpy().values()))
"""


def _fit_in_process(cache: Path | str) -> bytes:
    """The user embeddings of a small fit in a fresh process, with `cache` enabled ("": none)."""
    done = subprocess.run(
        [sys.executable, "-c", _FIT_SCRIPT, str(cache)],
        capture_output=True,
        env=_env(),
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode(errors="replace")[-2000:])
    return done.stdout


def _cache_damaged(d: Path, damage: str) -> bool:
    """A fit with a damaged cache gives the embeddings of a fit without one."""
    cache = d / "cache"
    cache.mkdir()
    if damage == "junk":
        _write(cache, "junk.bin", os.urandom(512))
        (cache / "a-folder").mkdir()
        _write(cache, "empty", b"")
    else:
        _fit_in_process(cache)  # fills it
        entries = [p for p in cache.rglob("*") if p.is_file()]
        if not entries:
            raise RuntimeError(f"nothing was cached in {cache}: no entry to damage")
        for entry in entries:
            data = entry.read_bytes()
            entry.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(64))
    return _fit_in_process(cache) == _fit_in_process("")


def _unwritable(d: Path) -> Path:
    """A folder this process cannot write into (root writes anywhere: then one under a file)."""
    if os.geteuid() == 0:
        return _write(d, "a-file", b"x") / "cache"
    folder = d / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


def _cache_cases() -> list[Case]:
    k, enable = "compilation cache", cfcore.enable_compilation_cache
    return [
        Case(k, "enable_compilation_cache('')", lambda d: enable("")),
        Case(k, "enable_compilation_cache(a file)", lambda d: enable(_write(d, "f", b"x"))),
        Case(k, "folder under a file", lambda d: enable(_write(d, "f", b"x") / "c")),
        Case(k, "folder without write permission", lambda d: enable(_unwritable(d))),
        Case(k, "enable_compilation_cache(123)", lambda d: enable(123)),  # type: ignore[arg-type]
        Case(k, "path with NUL", lambda d: enable(str(d / "a\0b"))),
        Case(k, "junk files in the folder (same result)", lambda d: _cache_damaged(d, "junk"), "ok"),
        Case(k, "truncated entries (same result)", lambda d: _cache_damaged(d, "truncated"), "ok"),
        Case(k, "random-byte entries (same result)", lambda d: _cache_damaged(d, "random"), "ok"),
    ]  # fmt: skip


# ---------------------------------------------------------------------------- sharded checkpoints


def _other_model() -> Any:
    m = cfcore.MatrixFactorization(embedding_dim=4, init_stddev=0.5)
    m.fit(_ratings(), steps=1, optimizer=cfcore.optimizers.SGD(1.0), backend="jax", progress=False)
    return m


def _ckpt(d: Path, name: str = "ck", model: Any = None) -> Path:
    return (model or _model()).save(d / name, sharded=True)


def _shard(folder: Path) -> Path:
    return next(folder.glob("shards-*/shard-*.npz"))


def _damaged_ckpt(d: Path, how: str) -> Any:
    folder = _ckpt(d)
    shard = _shard(folder)
    if how == "missing shard":
        shard.unlink()
    elif how == "shard from another checkpoint":
        shutil.copyfile(_shard(_ckpt(d, "other", _other_model())), shard)
    elif how == "truncated shard":
        shard.write_bytes(shard.read_bytes()[:-100])
    elif how == "empty shard":
        shard.write_bytes(b"")
    elif how == "random-byte shard":
        shard.write_bytes(os.urandom(2048))
    elif how == "shard is a folder":
        shard.unlink()
        shard.mkdir()
    elif how == "index without its shard folder":
        shutil.rmtree(shard.parent)
    elif how == "shard folders but no index":
        (folder / "model.npz").unlink()
    elif how == "shard folder is a file":
        shutil.rmtree(shard.parent)
        _write(folder, shard.parent.name, b"x")
    elif how == "shard folder renamed":
        shard.parent.rename(folder / "shards-0000000000000000")
    elif how == "shard renamed to 1 of 2":
        shard.rename(shard.with_name("shard-00001-of-00002.npz"))
    elif how == "truncated index":
        index = folder / "model.npz"
        index.write_bytes(index.read_bytes()[:-100])
    elif how == "index from another checkpoint":
        shutil.copyfile(_ckpt(d, "other", _other_model()) / "model.npz", folder / "model.npz")
    elif how == "pickled shard member":
        with zipfile.ZipFile(shard, "a") as zf, zf.open("extra.npy", "w") as f:
            np.lib.format.write_array(f, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    return cfcore.load(folder)


def _sharded_cases() -> list[Case]:
    k = "sharded checkpoints"
    damages = [
        "missing shard", "shard from another checkpoint", "truncated shard", "empty shard",
        "random-byte shard", "shard is a folder", "index without its shard folder",
        "shard folders but no index", "shard folder is a file", "shard folder renamed",
        "shard renamed to 1 of 2", "truncated index", "index from another checkpoint",
        "pickled shard member",
    ]  # fmt: skip
    out = [Case(k, how, lambda d, how=how: _damaged_ckpt(d, how)) for how in damages]
    return out + [
        Case(k, "load(an empty folder)", lambda d: cfcore.load(d)),
        Case(k, "save(a file, sharded=True)", lambda d: _model().save(_write(d, "f", b"x"), sharded=True)),
        Case(k, "save(folder under a file, sharded=True)", lambda d: _model().save(_write(d, "f", b"x") / "c", sharded=True)),
        Case(k, "save('', sharded=True)", lambda d: _model().save("", sharded=True)),
        Case(k, "save(sharded='yes')", lambda d: _model().save(d / "c", sharded="yes")),
    ]  # fmt: skip


# ---------------------------------------------------------------------------- ALS arguments

_ALS: dict[str, list[Any]] = {}


def _implicit() -> cfcore.Ratings:
    return _ratings().to_implicit(threshold=2.5)


def _als(name: str) -> Any:
    """A small fitted WALS, IALS or BiasedMF (fitted once)."""
    if name not in _ALS:
        model = getattr(cfcore, name)(embedding_dim=3)
        train = _implicit() if name == "IALS" else _ratings()
        model.fit(train, steps=2, backend="jax", progress=False)
        _ALS[name] = [model]
    return _ALS[name][0]


def _als_fit(name: str, **kwargs: Any) -> Any:
    train = _implicit() if name == "IALS" else _ratings()
    args = {"steps": 1, "backend": "jax", "progress": False} | kwargs
    return getattr(cfcore, name)(embedding_dim=3).fit(train, **args)


def _negative_counts(d: Path) -> Any:
    r = _ratings()
    counts = cfcore.Ratings(r.users, r.items, -np.abs(r.values), r.num_users, r.num_items)
    return cfcore.IALS(embedding_dim=3).fit(counts, steps=1, backend="jax", progress=False)


def _empty_row_zero_weight(d: Path) -> Any:
    r = _implicit()
    keep = r.users != 0  # user 0 has no positive left
    rows = cfcore.Ratings(r.users[keep], r.items[keep], r.values[keep], r.num_users, r.num_items)
    model = cfcore.IALS(embedding_dim=3, unobserved_weight=0.0)
    return model.fit(rows, steps=2, backend="jax", progress=False)


def _posterior(**kwargs: Any) -> Any:
    return _als("BiasedMF").sample_posterior(_ratings(), backend="jax", progress=False, **kwargs)


def _posterior_unfitted(d: Path) -> bool:
    """Documented: the chain starts from the initial values; the average predicts finitely."""
    model = cfcore.BiasedMF(embedding_dim=3)
    average = model.sample_posterior(
        _ratings(), samples=3, burn_in=1, backend="jax", progress=False
    )
    return bool(np.isfinite(average.predict([0, 1], [0, 1])).all())


def _als_cases() -> list[Case]:
    k = "ALS arguments"
    out: list[Case] = []
    for name in ("WALS", "IALS", "BiasedMF"):
        bad: list[tuple[str, Any]] = [
            ("solver", "nope"), ("solver", 3), ("cg_steps", 0), ("cg_steps", -1), ("cg_steps", 2.5),
            ("embedding_dim", 0), ("embedding_dim", -2), ("regularization_coeff", -1.0),
            ("regularization_coeff", float("nan")), ("regularization_coeff", float("inf")),
            ("init_stddev", -0.1), ("init_stddev", float("nan")),
        ]  # fmt: skip
        bad += {
            "WALS": [("gravity_coeff", -1.0), ("gravity_coeff", float("nan"))],
            "IALS": [("unobserved_weight", -1.0), ("unobserved_weight", float("inf")),
                     ("regularization_exponent", float("nan")), ("confidence", -1.0)],
            "BiasedMF": [("bias_regularization_coeff", -1.0), ("gravity_coeff", float("inf"))],
        }[name]  # fmt: skip
        for arg, value in bad:
            out.append(
                Case(k, f"{name}({arg}={value!r})", lambda d, n=name, a=arg, v=value: getattr(cfcore, n)(**{a: v}))
            )  # fmt: skip
        for arg, value in [("devices", 0), ("devices", -1), ("devices", "x"), ("steps", 0),
                           ("steps", -3), ("backend", "nope")]:  # fmt: skip
            out.append(
                Case(k, f"{name}.fit({arg}={value!r})", lambda d, n=name, a=arg, v=value: _als_fit(n, **{a: v}))
            )  # fmt: skip
        for label, ratings in [("unknown item 999", {999: 4.0}), ("rating NaN", {0: float("nan")}),
                               ("rating inf", {0: float("inf")}), ("no ratings", {})]:  # fmt: skip
            out.append(
                Case(k, f"{name}.fold_in({label})", lambda d, n=name, r=ratings: _als(n).fold_in(r, backend="numpy"))
            )  # fmt: skip
        out.append(
            Case(k, f"{name}.fold_in(reg=-1)", lambda d, n=name: _als(n).fold_in({0: 4.0}, reg=-1.0, backend="numpy"))
        )  # fmt: skip
    out += [
        Case(k, "IALS negative counts", _negative_counts),
        Case(k, "IALS unobserved_weight=0, a row without positives", _empty_row_zero_weight),
        Case(k, "BiasedMF.fit(solver='nope')", lambda d: _als_fit("BiasedMF", solver="nope")),
        Case(k, "sample_posterior before fit (documented: from the initial values)", _posterior_unfitted, "ok"),
    ]  # fmt: skip
    for arg, value in [("samples", 0), ("samples", -3), ("samples", 2.5), ("burn_in", -1),
                       ("thin", 0), ("noise_precision", 0.0), ("noise_precision", -1.0),
                       ("noise_precision", float("nan"))]:  # fmt: skip
        out.append(
            Case(k, f"sample_posterior({arg}={value!r})", lambda d, a=arg, v=value: _posterior(**{a: v}))
        )  # fmt: skip
    return out


# ---------------------------------------------------------------------------- archives


def _zip_of(d: Path, members: dict[str, bytes]) -> Path:
    path = d / f"ml-1m-{len(list(d.iterdir()))}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _load_zip(d: Path, members: dict[str, bytes]) -> Any:
    return cfcore.datasets.load_movielens("1m", data_dir=_zip_of(d, members), verify=False)


def _members(**override: bytes) -> dict[str, bytes]:
    files = {
        "ratings.dat": _GOOD.encode(),
        "movies.dat": b"1::Toy Story (1995)::Animation\n",
        "users.dat": b"1::F::1::10::48067\n",
    } | override
    return {f"ml-1m/{k}": v for k, v in files.items() if v is not None}


def _lying_header(d: Path) -> Any:
    """movies.dat holds 64 MiB more than its headers say (1000 bytes)."""
    path = _zip_of(d, _members(movies=b""))
    path.unlink()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in _members().items():
            with zf.open(name, "w", force_zip64=True) as f:
                f.write(data)
                if name.endswith("movies.dat"):
                    for _ in range(64):
                        f.write(b"\n" * (1 << 20))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("ml-1m/movies.dat")
        central = zf.start_dir
    # zip64 entries keep the size in an extra field: rewrite it in both headers.
    for start in (info.header_offset, central):
        at = data.index(b"\x01\x00", start + 30)  # the zip64 extra field's tag
        struct.pack_into("<Q", data, at + 4, 1000)
    path.write_bytes(bytes(data))
    return cfcore.datasets.load_movielens("1m", data_dir=path, verify=False)


def _archive_cases() -> list[Case]:
    k = "archives"
    lines = {
        "rating 0": "2::1::0::9", "rating 6": "2::1::6::9", "rating nan": "2::1::nan::9",
        "rating 1e400": "2::1::1e400::9", "rating missing": "2::1::::9", "3 fields": "2::1::4",
        "timestamp 'x'": "2::1::4::x", "timestamp 1e400": "2::1::4::1e400",
        "user id 'abc'": "abc::1::4::9", "user id -1": "-1::1::4::9",
        "user id 2**70": f"{2**70}::1::4::9", "item id 1.5": "2::1.5::4::9",
        "tab separators": "2\t1\t4\t9", "a 1 MiB field": "2::1::4::" + "9" * (1 << 20),
    }  # fmt: skip
    out = [
        Case(k, f"ratings.dat: {label}", lambda d, x=x: _release_zip(d, _GOOD + x + "\n"))
        for label, x in lines.items()
    ]
    users = {"age 'x'": b"1::F::x::10::48067\n", "4 fields": b"1::F::1::10\n",
             "6 fields": b"1::F::1::10::48067::x\n"}  # fmt: skip
    movies = {"2 fields": b"1::Toy Story (1995)\n", "id 'x'": b"x::Toy Story (1995)::Animation\n",
              "4 fields": b"1::Toy Story (1995)::Animation::x\n"}  # fmt: skip
    out += [Case(k, f"users.dat: {a}", lambda d, b=b: _load_zip(d, _members(**{"users.dat": b}))) for a, b in users.items()]  # fmt: skip
    out += [Case(k, f"movies.dat: {a}", lambda d, b=b: _load_zip(d, _members(**{"movies.dat": b}))) for a, b in movies.items()]  # fmt: skip
    return out + [
        Case(k, "zip: no ratings.dat", lambda d: _load_zip(d, _members(**{"ratings.dat": None}))),  # type: ignore[arg-type]
        Case(k, "zip: no members", lambda d: _load_zip(d, {})),
        Case(k, "zip: random bytes", lambda d: cfcore.datasets.load_movielens("1m", data_dir=_write(d, "ml-1m.zip", os.urandom(4096)), verify=False)),
        Case(k, "zip: truncated", lambda d: cfcore.datasets.load_movielens("1m", data_dir=_write(d, "ml-1m.zip", _zip_of(d, _members()).read_bytes()[:-30]), verify=False)),
        Case(k, "zip: header says 1000 bytes, holds 64 MiB", _lying_header),
        Case(k, "zip: users.dat of 16 MiB NUL bytes", lambda d: _load_zip(d, _members(**{"users.dat": bytes(16 << 20)}))),
    ]  # fmt: skip


# ---------------------------------------------------------------------------- signals


def _caught_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # ended
    line = next(x for x in status.splitlines() if x.startswith("SigCgt:"))
    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


def _interrupted(d: Path, dataset: Path, model: str, signum: int) -> bool:
    """`cfcore train` gets `signum` once its handlers are in: rc 128 + signum, one line."""
    out = d / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfcore.cli", "train", "--backend", "jax", "--model", model,
         "--dataset", str(dataset), "--steps", "30", "--dim", "8",
         "--out", str(out), "--no-report", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not _caught_sigterm(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.005)  # polling /proc: there is no event to wait on
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    lines = [x for x in err.splitlines() if x.startswith("interrupted")]
    bad = any(x in err for x in ("Traceback", "Fatal Python error", "Segmentation fault"))
    temporaries = list(out.rglob("*.tmp")) if out.exists() else []
    if proc.returncode != 128 + signum or len(lines) != 1 or bad or temporaries:
        raise RuntimeError(f"rc {proc.returncode}, {temporaries}: {err[-1500:]}")
    return True


def _signal_cases(data_dir: Path | None) -> list[Case]:
    if data_dir is None or not (data_dir / "ml-100k" / "u.data").exists():
        return []
    dataset = data_dir / "ml-100k"
    if not Path("/proc/self/status").exists():
        return []
    plans = [("wals", signal.SIGINT), ("wals", signal.SIGTERM), ("biased", signal.SIGINT),
             ("regularized", signal.SIGTERM)]  # fmt: skip
    return [
        Case("signals", f"train --model {m}: {s.name} at start", lambda d, m=m, s=s: _interrupted(d, dataset, m, s), "ok")
        for m, s in plans
    ]  # fmt: skip


def surface_cases(data_dir: Path | None = None) -> list[Case]:
    """The cases of the surfaces of issue 23."""
    return (
        _cache_cases()
        + _sharded_cases()
        + _als_cases()
        + _archive_cases()
        + _signal_cases(data_dir)
    )
