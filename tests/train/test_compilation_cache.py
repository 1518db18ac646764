"""The persistent compilation cache (`cfcore.enable_compilation_cache`, `$CFCORE_COMPILATION_CACHE`).

Each run is a process of its own, since a process keeps what it compiled in memory anyway: the
first fills the folder, the second must add nothing to it (every program read back from it,
none compiled again) and give the same numbers.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest

import cfcore
from cfcore.backend import compilation_cache

from .._support.tiny_data import cli_env
from ..conftest import require_backend

pytestmark = pytest.mark.subprocess

# One WALS sweep and a few Adam steps on a tiny problem: a handful of distinct programs.
SCRIPT = """
import json, sys
{before}
import cfcore
{enable}
events = {{}}
if sys.argv[1] == "jax":  # JAX counts the programs it read from the cache and compiled
    import jax.monitoring
    def count(name, **_):
        events[name] = events.get(name, 0) + 1
    jax.monitoring.register_event_listener(count)
r = cfcore.synthetic_ratings(30, 20, 200, seed=0)
w = cfcore.WALS(embedding_dim=4)
w.fit(r, steps=1, backend=sys.argv[1], progress=False)
m = cfcore.BiasedMF(embedding_dim=4)
m.fit(r, steps=3, optimizer=cfcore.optimizers.Adam(0.01), batch_size=50, backend=sys.argv[1],
      progress=False)
print(json.dumps({{"wals": w.embeddings["item"].tolist(), "biased": m.embeddings["user"].tolist(),
                  "events": events}}))
"""


VERBOSE_TF = {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": "device_executable_persistor=1"}
"""TensorFlow says what it loads from the cache only in its verbose log (the persistor's VLOG)."""


def _run(
    backend: str,
    *,
    before: str = "",
    enable: str = "",
    wrap: list[str] | None = None,
    cwd: Path | None = None,
    extra: dict[str, str] | None = None,
    **env: str | None,
) -> dict:
    """Runs SCRIPT in a new process (`wrap` + python); its results, stderr and cache warnings.

    An environment value None removes the variable."""
    code = SCRIPT.format(before=before, enable=enable)
    environ = cli_env(**(extra or {}))
    for name, value in env.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    out = subprocess.run(
        [*(wrap or []), sys.executable, "-c", code, backend],
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # Every warning the cache gives, cfcore's or a framework's own ("Error reading persistent
    # compilation cache entry ..."), and TensorFlow's errors.
    warned = [
        line
        for line in out.stderr.splitlines()
        if "Warning:" in line and "cache" in line.lower() or "Error" in line and ".pb" in line
    ]
    return {**got, "stderr": out.stderr, "warnings": warned}


def _entries(folder: Path) -> dict[str, int]:
    """The programs under `folder` (not cfcore's sidecars) and their modification times."""
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns
        for p in folder.rglob("*")
        if p.is_file() and compilation_cache._is_entry(p.name)
    }


def _same(a: dict, b: dict) -> bool:
    return a["wals"] == b["wals"] and a["biased"] == b["biased"]


@pytest.mark.parametrize("backend", ["jax", "tf"])
def test_a_second_process_reads_every_program_back(backend, tmp_path):
    require_backend(backend)
    folder = tmp_path / "cache"
    enable = f"cfcore.enable_compilation_cache({str(folder)!r})"
    first = _run(backend, enable=enable)
    (sub,) = folder.glob(f"{backend}-*")  # one subfolder: this framework version and CPU
    filled = _entries(sub)
    assert len(filled) >= 2, filled  # the sweep and the training chunk at least
    second = _run(backend, enable=enable, extra=VERBOSE_TF if backend == "tf" else None)
    assert _entries(sub) == filled  # nothing compiled again, nothing rewritten
    assert not second["warnings"], second["warnings"]
    if backend == "jax":
        assert "/jax/compilation_cache/cache_misses" not in second["events"], second["events"]
    assert _read_back(backend, second) >= len(filled), second["events"]
    assert _same(second, first)
    assert _same(first, _run(backend))  # and both equal a run without the cache (conftest: off)


@pytest.mark.parametrize("backend", ["jax", "tf"])
def test_the_environment_variable_enables_it(backend, tmp_path):
    require_backend(backend)
    folder = tmp_path / "env-cache"
    _run(backend, CFCORE_COMPILATION_CACHE=str(folder))
    assert [p for p in folder.glob(f"{backend}-*/*") if p.is_file()], list(folder.rglob("*"))


def test_tensorflow_started_before_warns_and_caches_nothing(tmp_path):
    # TensorFlow reads its XLA flags when it first lists its devices (as a script that splits the
    # CPU into logical devices does first): a cache asked for after that cannot apply to it.
    require_backend("tf")
    folder = tmp_path / "late"
    got = _run(
        "tf",
        before="import tensorflow as tf; tf.config.list_physical_devices('CPU')",
        enable=f"cfcore.enable_compilation_cache({str(folder)!r})",
    )
    assert "applies to TensorFlow only in processes that call" in got["stderr"]
    assert not [p for p in folder.rglob("*") if p.is_file()]


def test_bad_folders_are_refused(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    with pytest.raises(cfcore.FileAccessError, match="cannot create the compilation cache"):
        cfcore.enable_compilation_cache(afile / "under")
    with pytest.raises(cfcore.ArgumentTypeError, match="must be a path"):
        cfcore.enable_compilation_cache(3)  # type: ignore[arg-type]
    # An empty path would be the current folder: refused, not taken.
    for empty in ("", "  "):
        with pytest.raises(cfcore.FileAccessError, match="empty path"):
            cfcore.enable_compilation_cache(empty)
    with pytest.raises(cfcore.ArgumentValueError, match="max_bytes must be >= 0"):
        cfcore.enable_compilation_cache(tmp_path, max_bytes=-1)
    with pytest.raises(cfcore.ArgumentTypeError, match="max_bytes must be an int"):
        cfcore.enable_compilation_cache(tmp_path, max_bytes="2G")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == [afile]  # nothing created by a refusal


def test_flags_keep_the_others_and_replace_an_old_folder():
    flags = compilation_cache.tf_xla_flags(
        f"--tf_xla_auto_jit=2 {compilation_cache.TF_FLAG}=/old --tf_xla_cpu_global_jit",
        Path("/new"),
    )
    assert flags.split() == [
        "--tf_xla_auto_jit=2",
        "--tf_xla_cpu_global_jit",
        f"{compilation_cache.TF_FLAG}=/new",
    ]


def test_each_cpu_feature_set_gets_its_own_subfolder(tmp_path):
    # A program compiled for one CPU's instructions must not be loaded on another's.
    features = compilation_cache.cpu_features()
    assert features.strip(), "no CPU features detected"
    here = compilation_cache.subfolder(tmp_path, "jax", "1.0")
    assert here.name.startswith(f"jax-1.0-{platform.machine()}-")
    assert compilation_cache.subfolder(tmp_path, "tf", "1.0").name != here.name
    with mock.patch.object(compilation_cache, "cpu_features", return_value="SSE SSE2"):
        assert compilation_cache.subfolder(tmp_path, "jax", "1.0") != here


# ------------------------------------------------------------------ damage, default, bounds


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> Callable[[str], tuple[Path, Path, dict]]:
    """A cache folder filled by one run of SCRIPT per backend, made once and put back as it was
    for each test, at the same path: JAX's keys depend on the folder's path (a copy elsewhere
    would only miss). Gives (folder, the backend's subfolder, the filling run's results)."""
    made: dict[str, tuple[Path, Path, dict]] = {}

    def get(backend: str) -> tuple[Path, Path, dict]:
        if backend not in made:
            top = tmp_path_factory.mktemp(f"filled-{backend}")
            got = _run(backend, CFCORE_COMPILATION_CACHE=str(top / "cache"))
            shutil.copytree(top / "cache", top / "pristine", symlinks=True)
            made[backend] = top, top / "pristine", got
        top, pristine, got = made[backend]
        folder = top / "cache"
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        else:
            folder.unlink(missing_ok=True)
        shutil.copytree(pristine, folder, symlinks=True)
        (sub,) = folder.glob(f"{backend}-*")
        return folder, sub, got

    return get


def _truncate(entry: Path) -> None:
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2])


def _flip(entry: Path) -> None:  # one byte in the middle: the size and name stay
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))


def _random(entry: Path) -> None:
    entry.write_bytes(os.urandom(entry.stat().st_size))


def _empty(entry: Path) -> None:
    entry.write_bytes(b"")


def _folder_in_its_place(entry: Path) -> None:  # cannot be read as a file
    entry.unlink()
    (entry / "x").mkdir(parents=True)


def _no_sidecar(entry: Path) -> None:  # copied in from elsewhere, or its writer was killed
    entry.with_name(entry.name + compilation_cache.SIDECAR).unlink()


def _other_cfcore(entry: Path) -> None:  # a sidecar of another format (another cfcore)
    side = entry.with_name(entry.name + compilation_cache.SIDECAR)
    side.write_text("cfcore compilation cache entry v0 md5 0123\n")


DAMAGE = {
    "truncated": _truncate,
    "flipped": _flip,
    "random": _random,
    "empty": _empty,
    "folder": _folder_in_its_place,
    "no-sidecar": _no_sidecar,
    "other-cfcore": _other_cfcore,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE) + ["swapped"])
@pytest.mark.parametrize("backend", ["jax", "tf"])
def test_a_damaged_entry_is_dropped_and_compiled_again(backend, damage, filled, tmp_path):
    # TensorFlow fails every run on such an entry ("Serialized cache key does not match",
    # OutOfRangeError, DataLossError): cfcore drops it before TensorFlow looks.
    folder, sub, want = filled(backend)
    entries = sorted(p for p in sub.iterdir() if compilation_cache._is_entry(p.name))
    assert len(entries) >= 2, entries
    if damage == "swapped":  # another program's entry under this one's name (foreign)
        a, b = entries[0].read_bytes(), entries[1].read_bytes()
        entries[0].write_bytes(b)
        entries[1].write_bytes(a)
        damaged = entries[:2]
    else:
        for entry in entries:
            DAMAGE[damage](entry)
        damaged = entries
    got = _run(backend, CFCORE_COMPILATION_CACHE=str(folder))
    assert _same(got, want)
    (warning,) = got["warnings"]  # one, naming the folder
    assert str(sub) in warning and f"{len(damaged)} damaged" in warning, warning
    if damage != "truncated":
        return
    # ... and compiled again into the cache: the next process reads them all back, silently.
    again = _run(backend, CFCORE_COMPILATION_CACHE=str(folder))
    assert _same(again, want) and not again["warnings"], again["warnings"]
    for entry in damaged:
        assert entry.is_file(), entry


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
@pytest.mark.parametrize("backend", ["jax", "tf"])
def test_an_unreadable_entry_is_dropped(backend, filled, tmp_path):
    folder, sub, want = filled(backend)
    entry = next(p for p in sub.iterdir() if compilation_cache._is_entry(p.name))
    entry.chmod(0)
    got = _run(backend, CFCORE_COMPILATION_CACHE=str(folder))
    assert _same(got, want) and len(got["warnings"]) == 1, got["warnings"]


@pytest.mark.parametrize("backend", ["jax", "tf"])
def test_on_by_default_in_the_user_cache_folder(backend, tmp_path):
    home = {"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    got = _run(backend, CFCORE_COMPILATION_CACHE=None, extra=home)
    assert not got["warnings"], got["warnings"]
    # platformdirs' user cache folder on Linux: $XDG_CACHE_HOME/cfcore.
    (sub,) = (tmp_path / "xdg" / "cfcore" / "compilation").glob(f"{backend}-*")
    assert _entries(sub)
    again = _run(backend, CFCORE_COMPILATION_CACHE=None, extra=home)
    assert _same(again, got) and not again["warnings"]
    if backend == "jax":
        assert "/jax/compilation_cache/cache_misses" not in again["events"], again["events"]


@pytest.mark.parametrize(
    ("backend", "off"),
    [("jax", v) for v in ("off", "0", "false", "None", "")] + [("tf", "off")],
)
def test_the_environment_variable_turns_it_off(backend, off, tmp_path):
    home = {"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    got = _run(backend, cwd=cwd, CFCORE_COMPILATION_CACHE=off, extra=home)
    assert not (tmp_path / "xdg" / "cfcore").exists()
    assert not list(cwd.iterdir())  # "" is off, not the current folder
    assert not got["warnings"]


@pytest.mark.parametrize("backend", ["jax", "tf"])
def test_none_turns_it_off(backend, tmp_path):
    home = {"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    # Off before the backend is loaded, and again after (JAX stops at once; TensorFlow, which
    # has not listed its devices yet, too).
    enable = f"cfcore.enable_compilation_cache(None); cfcore.get_backend({backend!r}); "
    enable += "cfcore.enable_compilation_cache(None)"
    got = _run(backend, enable=enable, CFCORE_COMPILATION_CACHE=None, extra=home)
    assert not (tmp_path / "xdg" / "cfcore").exists(), list((tmp_path / "xdg").rglob("*"))
    assert not got["warnings"], got["warnings"]


def _sizes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_least_recently_used_entries_go_beyond_the_bound(tmp_path):
    # Two framework subfolders (one a stale version), entries of 1000 bytes last used at
    # t = 1..6: a bound of 3 entries keeps the three used last, wherever they are.
    subs = [tmp_path / "jax-0.1-x", tmp_path / "tf-9.9-x"]
    for i in range(6):
        sub = subs[i % 2]
        sub.mkdir(exist_ok=True)
        entry = sub / f"entry{i}"
        entry.write_bytes(bytes(1000))
        os.utime(entry, (1_000_000 + i, 1_000_000 + i))
    compilation_cache.evict(tmp_path, 3000)
    left = sorted(p.name for s in subs for p in s.iterdir())
    assert left == ["entry3", "entry4", "entry5"]
    # Sidecars count, and go with their entry; last use is the later of access and change.
    side = subs[1] / ("entry3" + compilation_cache.SIDECAR)
    side.write_text("x" * 10)
    os.utime(subs[1] / "entry3", (2_000_000, 1_000_003))  # read recently
    compilation_cache.evict(tmp_path, 2010)
    left = sorted(p.name for s in subs for p in s.iterdir())
    assert left == ["entry3", "entry3" + compilation_cache.SIDECAR, "entry5"]


@pytest.mark.parametrize("backend", ["jax", "tf"])
def test_the_bound_holds_across_processes(backend, filled, tmp_path):
    folder, sub, want = filled(backend)
    # One byte under what it holds: the least recently used entry goes at start, is compiled
    # again, and at exit the least recently used go again (LRU: not necessarily the same).
    bound = _sizes(folder) - 1
    got = _run(
        backend,
        CFCORE_COMPILATION_CACHE=str(folder),
        CFCORE_COMPILATION_CACHE_MAX_BYTES=str(bound),
    )
    assert _same(got, want) and not got["warnings"], got["warnings"]
    assert 0 < _sizes(folder) <= bound  # evicted at start and, after what it added, at exit


@pytest.mark.parametrize("backend", ["jax", "tf"])
def test_two_processes_filling_it_at_once(backend, tmp_path):
    folder = tmp_path / "cache"
    code = SCRIPT.format(before="", enable="")
    env = cli_env(CFCORE_COMPILATION_CACHE=str(folder))
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code, backend],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], [e[-2000:] for _, e in outs]
    first, second = (json.loads(o.strip().splitlines()[-1]) for o, _ in outs)
    assert _same(first, second)
    for _, err in outs:
        assert "Warning:" not in err, err[-2000:]
    # A third process reads what they left, silently, with the same results.
    third = _run(backend, CFCORE_COMPILATION_CACHE=str(folder))
    assert _same(third, first) and not third["warnings"], third["warnings"]


def _unshare() -> list[str]:
    """A command prefix giving the process a mount namespace of its own (tmpfs without root
    trouble), or skips."""
    probe = 'd=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs "$d" && umount "$d"; rmdir "$d"'
    try:
        done = subprocess.run(
            ["unshare", "-rm", "sh", "-c", probe], capture_output=True, timeout=30
        )
        ok = done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        pytest.skip("cannot mount a tmpfs in a user and mount namespace (unshare -rm)")
    return ["unshare", "-rm", "sh", "-c"]


def _in_tmpfs(mount: Path, size: str, then: str, copy: Path | None = None) -> list[str]:
    """`sh -c` words that mount a tmpfs of `size` on `mount` (filled from `copy`), run `then`
    (shell words), and run the python command that follows."""
    fill = f"cp -a {copy}/. {mount}/ && " if copy else ""
    return [f'mount -t tmpfs -o size={size} tmpfs {mount} && {fill}{then} exec "$@"', "sh"]


def _read_back(backend: str, got: dict) -> int:
    """How many programs the run read from the cache."""
    if backend == "jax":
        return got["events"].get("/jax/compilation_cache/cache_hits", 0)
    return got["stderr"].count("Loading cached entry for:")


@pytest.mark.parametrize("backend", ["jax", "tf"])
def test_a_read_only_folder_is_read_not_added_to(backend, filled, tmp_path):
    # TensorFlow fails the op whose program it cannot write (PermissionDeniedError).
    prefix = _unshare()
    folder, sub, want = filled(backend)
    for source in (folder.parent / "pristine", None):  # the filled folder, an empty one
        # A read-only tmpfs on the folder's own path (JAX's keys depend on it).
        words = _in_tmpfs(folder, "8m", f"mount -o remount,ro {folder} &&", copy=source)
        env = VERBOSE_TF if backend == "tf" else None
        got = _run(backend, wrap=[*prefix, *words], CFCORE_COMPILATION_CACHE=str(folder), extra=env)
        assert _same(got, want)
        (warning,) = got["warnings"]
        assert (
            str(folder) in warning
            and "not writable (Read-only file system)" in warning
            or (
                source is None
                and "Read-only file system" in warning  # no subfolder: cannot make it
            )
        ), warning
        assert (_read_back(backend, got) > 0) == (source is not None), got["events"]


@pytest.mark.parametrize("backend", ["jax", "tf"])
def test_a_full_disk_is_read_not_added_to(backend, filled, tmp_path):
    # TensorFlow fails the op whose program it cannot write (ResourceExhaustedError).
    prefix = _unshare()
    folder, sub, want = filled(backend)
    for source in (folder.parent / "pristine", None):
        words = _in_tmpfs(folder, "4m", "", copy=source)
        env = VERBOSE_TF if backend == "tf" else None
        got = _run(backend, wrap=[*prefix, *words], CFCORE_COMPILATION_CACHE=str(folder), extra=env)
        assert _same(got, want)
        (warning,) = got["warnings"]
        assert "MiB free" in warning and str(folder) in warning, warning
        assert (_read_back(backend, got) > 0) == (source is not None), got["events"]


@pytest.mark.parametrize("backend", ["jax", "tf"])
def test_a_folder_replaced_by_a_file(backend, filled, tmp_path):
    folder, sub, want = filled(backend)
    shutil.rmtree(sub)
    sub.write_text("not a folder")  # the framework's subfolder
    got = _run(backend, CFCORE_COMPILATION_CACHE=str(folder))
    assert _same(got, want)
    (warning,) = got["warnings"]
    assert str(sub) in warning, warning
    shutil.rmtree(folder)
    folder.write_text("not a folder")  # the cache folder itself
    got = _run(backend, CFCORE_COMPILATION_CACHE=str(folder))
    assert _same(got, want)
    (warning,) = got["warnings"]
    assert str(folder) in warning, warning


def test_the_default_leaves_a_cache_given_to_jax_alone(tmp_path):
    home = {"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    own = tmp_path / "own"
    jax_own = {
        "JAX_COMPILATION_CACHE_DIR": str(own),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    got = _run("jax", CFCORE_COMPILATION_CACHE=None, extra={**home, **jax_own})
    assert not got["warnings"], got["warnings"]
    assert not list((tmp_path / "xdg").rglob("jax-*"))  # not cfcore's default folder
    assert [p for p in own.iterdir() if p.is_file()]  # JAX's own, where the user put it
