"""A persistent cache of compiled programs, so that a new process skips XLA's compilation.

Every process compiles its programs again: on ml-100k a `BiasedMF` ALS sweep compiles for about
2 s on JAX, 4 s on TensorFlow (2-core Xeon), where the sweep itself takes milliseconds. Both
frameworks can keep what XLA compiled in a folder and read it back in the next process that
builds the same program (same shapes, same options, same framework version):

* JAX: `jax_compilation_cache_dir` (every program, however quick to compile:
  `jax_persistent_cache_min_compile_time_secs` 0), applied when asked, or when the backend is
  first loaded;
* TensorFlow: XLA's `--tf_xla_persistent_cache_directory` (in `TF_XLA_FLAGS`), which TensorFlow
  reads once, when it first lists its devices: enable the cache before that.

The cache is on by default, in the user's cache folder (`platformdirs`:
`~/.cache/cfcore/compilation` on Linux); `$CFCORE_COMPILATION_CACHE` names another folder or
turns it off ("off", "0", "false", "none" or empty), and so does `enable_compilation_cache`.

A cache must never break a run, and TensorFlow fails every later run on a damaged entry (a bare
`OutOfRangeError`, `DataLossError` or "Serialized cache key does not match") and on a write it
cannot make (a read-only or full disk). So cfcore checks the folder before a framework reads it
(`prepare`, when the backend applies the cache):

* each entry has a sidecar (`<entry>.cfcore`) holding the SHA-256 of its name and bytes,
  written by cfcore at the exit of the process that added the entry (TensorFlow writes an entry
  to a temporary file and renames it: a named entry is whole); an entry whose sidecar is missing,
  of another format, or does not match (truncated, damaged, another entry's bytes, a folder in
  its place, unreadable) is deleted before the framework looks, and compiled again;
* a folder that cannot take new entries (read-only, less than `MIN_FREE_BYTES` free) is read
  but not added to (TensorFlow's `--tf_xla_persistent_cache_read_only`; JAX adds only programs
  slower to compile than forever); one whose bad entries cannot be deleted is not used at all;
* either case warns once, naming the folder.

The folder is bounded: at enable time and at exit, the least recently used entries (by the later
of the entry file's access and modification times, read without touching them: `O_NOATIME`) of
every subfolder, stale framework versions included, are deleted until the whole is at most
`max_bytes` (2 GiB by default, `$CFCORE_COMPILATION_CACHE_MAX_BYTES`). One process may exceed the
bound by what it adds until the next start. Concurrent processes need no lock: deleting an entry
another process is about to read makes it a miss; entries appear whole (TensorFlow renames them
into place; a JAX entry is recorded only once its compressed stream is whole).

Tracing and lowering the Python functions is not cached (0.26-0.41 s of a fresh ml-100k
process; docs/performance.md "Tracing and lowering are not cached" says why); the programs'
compilation is. Each framework keeps its programs in a subfolder of its own, named for
its version and the CPU's features (`subfolder`), and keys them by the program itself.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import hashlib
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArgumentTypeError, ArgumentValueError, FileAccessError

CACHE_ENV = "CFCORE_COMPILATION_CACHE"
MAX_BYTES_ENV = "CFCORE_COMPILATION_CACHE_MAX_BYTES"
OFF_VALUES = frozenset({"off", "0", "false", "none", "no", ""})
"""Values of `$CFCORE_COMPILATION_CACHE` (any case, spaces stripped) that turn the cache off."""
DEFAULT_MAX_BYTES = 2 * 1024**3
MIN_FREE_BYTES = 128 * 1024**2
"""Below this much free space the folder is read, not added to: TensorFlow fails the op whose
program it cannot write ("No space left on device")."""
TF_FLAG = "--tf_xla_persistent_cache_directory"
TF_READ_ONLY_FLAG = "--tf_xla_persistent_cache_read_only"
SIDECAR = ".cfcore"
_SIDECAR_FORMAT = "cfcore compilation cache entry v1 sha256"
_STALE_TEMPORARY_SECONDS = 3600.0  # a writer's temporary file this old belongs to a dead writer
_CHUNK = 1 << 20


class _Default(enum.Enum):
    DEFAULT = "default"


DEFAULT = _Default.DEFAULT
"""`enable_compilation_cache`'s default: `$CFCORE_COMPILATION_CACHE`, else the user's folder."""


@dataclass
class _State:
    resolved: bool = False
    base: Path | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    chosen: bool = False  # asked for (an argument or $CFCORE_COMPILATION_CACHE), not the default


_state = _State()
_lock = threading.Lock()
_recorded: dict[Path, Callable[[bytes], object] | None] = {}  # subfolders to record at exit


def enable_compilation_cache(
    folder: str | os.PathLike[str] | None | _Default = DEFAULT, max_bytes: int | None = None
) -> Path | None:
    """Keeps compiled programs in `folder`, so that later processes load instead of compiling.

    The cache is on by default (see `folder` below); call this to move it, bound it otherwise,
    or turn it off. Applies to the JAX and TensorFlow backends, whether already loaded or loaded
    later in this process (other backends compile no XLA programs and ignore it). Damaged,
    truncated or foreign entries are deleted and compiled again (one warning); the least
    recently used entries are deleted beyond `max_bytes`.

    Args:
        folder: where to keep them; created if missing. None: off (JAX stops at once;
            TensorFlow only if it has not listed its devices yet). Left out:
            `$CFCORE_COMPILATION_CACHE` ("off", "0", "false", "none" or "" for off), else
            `compilation/` in cfcore's user cache folder (`platformdirs`).
        max_bytes: the most the folder may hold, in bytes (all framework versions together);
            None: `$CFCORE_COMPILATION_CACHE_MAX_BYTES`, else 2 GiB.

    Returns:
        The folder, absolute; None when the cache is off.

    Raises:
        ArgumentTypeError: `folder` is not a path or None, `max_bytes` not an int.
        ArgumentValueError: `max_bytes` is negative.
        FileAccessError: `folder` is empty, cannot be created, or is not writable.

    Warns:
        UserWarning: TensorFlow has already listed its devices in this process (it has run an
            op, or the CPU was split into logical devices), so it has read its XLA flags: its
            cache starts (or stops) only in processes that ask before that (JAX's applies at
            once).

    Example:
        >>> import cfcore
        >>> cfcore.enable_compilation_cache("~/.cache/cfcore-xla")  # doctest: +SKIP
    """
    if folder is not None and not isinstance(folder, str | os.PathLike | _Default):
        raise ArgumentTypeError(
            f"folder must be a path (str or os.PathLike) or None, got {type(folder).__name__}"
        )
    limit = _max_bytes(max_bytes, "max_bytes") if max_bytes is not None else _env_max_bytes()
    chosen = folder is not DEFAULT or CACHE_ENV in os.environ
    if folder is DEFAULT:
        env = os.environ.get(CACHE_ENV)
        if env is not None and env.strip().lower() in OFF_VALUES:
            folder = None
        else:
            folder = env if env is not None else _default_folder()
    if folder is not None and not os.fspath(folder).strip():
        raise FileAccessError(
            "the compilation cache folder is an empty path; pass a folder, or None for no cache"
        )
    if folder is not None and "\0" in os.fsdecode(os.fspath(folder)):
        raise FileAccessError(f"the compilation cache folder {folder!r} contains a NUL byte")
    path = None if folder is None else _writable(folder)
    with _lock:
        _state.resolved, _state.base, _state.max_bytes = True, path, limit
        _state.chosen = chosen
    if path is not None:
        evict(path, limit)
    for module in ("cfcore_jax", "cfcore_tf"):
        # A backend already loaded takes it now; one loaded later asks `folder()` at import.
        hook = getattr(sys.modules.get(module), "use_compilation_cache", None)
        if hook is not None:
            hook(path, stacklevel=3)
    return path


def folder() -> Path | None:
    """The cache folder, or None when the cache is off. Asked by a backend when it is imported.

    Unless `enable_compilation_cache` decided it: `$CFCORE_COMPILATION_CACHE`, else the default
    folder. A folder that cannot be used here warns (once) and turns the cache off rather than
    failing the run: a cache is only ever a shortcut.
    """
    with _lock:
        if _state.resolved:
            return _state.base
        _state.resolved = True
        env = os.environ.get(CACHE_ENV)
        _state.chosen = env is not None
        try:
            _state.max_bytes = _env_max_bytes()
            if env is not None and env.strip().lower() in OFF_VALUES:
                return None
            _state.base = _writable(env if env is not None else _default_folder())
        except (FileAccessError, ArgumentValueError, ArgumentTypeError) as e:
            warnings.warn(f"no compilation cache in this process: {e}", UserWarning, stacklevel=3)
            return None
        base, limit = _state.base, _state.max_bytes
    evict(base, limit)
    return base


def chosen() -> bool:
    """Whether the cache's folder (or off) was asked for, rather than the default: the default
    stays silent where it cannot apply (TensorFlow started before it)."""
    return _state.chosen


def max_bytes() -> int:
    """The bound of the cache folder, in bytes."""
    return _state.max_bytes


@dataclass(frozen=True)
class Prepared:
    """A framework's subfolder, checked (`prepare`).

    Attributes:
        folder: the subfolder.
        writable: new programs may be added (else the framework only reads).
    """

    folder: Path
    writable: bool


def prepare(
    base: Path,
    framework: str,
    version: str,
    check: Callable[[bytes], object] | None = None,
    stacklevel: int = 2,
) -> Prepared | None:
    """Makes a framework's subfolder of `base` safe to read before the framework reads it.

    Deletes every entry that fails its sidecar (see the module's docstring), finds out whether
    new entries can be added, and has the entries this process adds recorded at exit.

    Args:
        base: the cache folder.
        framework: "jax" or "tf" (the subfolder's name, `subfolder`).
        version: the framework's version.
        check: raises on the bytes of an entry that is not whole yet (a writer still writing);
            None: entries appear whole (written elsewhere and renamed into place).
        stacklevel: of the warning, counted from the caller.

    Returns:
        The subfolder and whether it takes new entries; None when the framework must not use it
        (it cannot be created, or holds a bad entry that cannot be deleted): one warning said so.
    """
    sub = subfolder(base, framework, version)
    try:
        sub.mkdir(parents=True, exist_ok=True)
        dropped, stuck = _drop_bad_entries(sub, _other_writers(sub))
    except OSError as e:
        _warn(sub, f"it cannot be used ({e}); programs are compiled afresh", stacklevel + 1)
        return None
    if stuck:
        _warn(
            sub,
            f"{stuck} damaged entr{'y' if stuck == 1 else 'ies'} cannot be deleted; the cache is "
            f"not used by {framework} in this process (delete the folder to reclaim it)",
            stacklevel + 1,
        )
        return None
    why = _cannot_add(sub)
    said = []
    if dropped:
        said.append(
            f"{dropped} damaged, truncated or foreign entr{'y was' if dropped == 1 else 'ies were'}"
            " deleted and will be compiled again"
        )
    if why:
        said.append(f"{why}: programs are read from it, not added")
    if said:
        _warn(sub, "; ".join(said), stacklevel + 1)
    if not why:
        with _lock:
            first = not _recorded
            _recorded[sub] = check
        with contextlib.suppress(OSError):
            (sub / _writer_mark(os.getpid())).touch()
        if first:
            atexit.register(_at_exit)
    return Prepared(sub, writable=not why)


def record(sub: Path, check: Callable[[bytes], object] | None = None) -> int:
    """Writes the sidecar of every entry of `sub` that has none, or an older one than the entry
    (the entries added since the process started, by it or by another; TensorFlow renames a new
    copy over an entry that another process compiled too, not always byte for byte the same).
    Returns how many it wrote.

    An entry that `check` refuses (still being written) is left without one: the next process
    deletes it. Errors (a folder gone read-only or full) skip the entry: never raised.
    """
    written = 0
    try:
        names = os.listdir(sub)
    except OSError:
        return 0
    for name in names:
        if not _is_entry(name):
            continue
        entry, side = sub / name, sub / (name + SIDECAR)
        try:
            if side.stat().st_mtime_ns >= entry.stat().st_mtime_ns:
                continue  # recorded after the entry was last written
        except FileNotFoundError:
            pass
        except OSError:
            continue
        try:
            digest = _digest(entry, check)
            _atomic_write(side, f"{_SIDECAR_FORMAT} {digest}\n")
            written += 1
        except Exception:  # noqa: BLE001  (OSError, or whatever `check`'s decompression raises)
            continue
    return written


def evict(base: Path, limit: int) -> int:
    """Deletes the least recently used entries under `base` (every subfolder) until the entries
    and their sidecars add up to at most `limit` bytes. Returns the bytes deleted.

    Last use is the later of an entry's access and modification times (the frameworks read and
    write entries; cfcore's own checks read them with `O_NOATIME`). Never raises: a file another
    process deleted first, or a folder that refuses deletion, is skipped.
    """
    entries: list[tuple[float, int, Path]] = []
    total = 0
    try:
        subs = [p for p in base.iterdir() if p.is_dir()]
    except OSError:
        return 0
    for sub in subs:
        try:
            names = set(os.listdir(sub))
        except OSError:
            continue
        for name in names:
            if not _is_entry(name):
                continue
            try:
                st = (sub / name).stat()
                side = (sub / (name + SIDECAR)).stat().st_size if name + SIDECAR in names else 0
            except OSError:
                continue
            size = st.st_size + side
            total += size
            entries.append((max(st.st_atime, st.st_mtime), size, sub / name))
    freed = 0
    entries.sort()  # least recently used first
    for _, size, entry in entries:
        if total - freed <= limit:
            break
        try:
            entry.with_name(entry.name + SIDECAR).unlink(missing_ok=True)
            entry.unlink(missing_ok=True)
        except OSError:
            continue
        freed += size
    return freed


def subfolder(base: Path, framework: str, version: str) -> Path:
    """Where one framework keeps its programs: `<framework>-<version>-<machine>-<cpu features>`.

    A compiled XLA:CPU program uses the instructions of the CPU it was compiled on, and
    TensorFlow loads one compiled elsewhere with only a logged warning ("could lead to ...
    SIGILL"): a folder shared by several machines (a network home folder) therefore keeps one
    subfolder per CPU feature set (`cpu_features`) and per framework version.
    """
    digest = hashlib.sha256(cpu_features().encode()).hexdigest()[:10]
    return base / f"{framework}-{version}-{platform.machine() or 'cpu'}-{digest}"


def cpu_features() -> str:
    """The instruction-set features of this CPU, as one string: NumPy's detection (its private
    `__cpu_features__`), else Linux's `/proc/cpuinfo` flags, else the processor's name."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as found

        return " ".join(sorted(k for k, v in found.items() if v))
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return " ".join(sorted(line.partition(":")[2].split()))
    except OSError:
        pass
    return platform.processor()


def tf_xla_flags(current: str, folder: Path | None, read_only: bool = False) -> str:
    """`TF_XLA_FLAGS` with the persistent cache folder set to `folder` (any earlier setting of
    that flag and of the read-only flag replaced, the other flags kept); None: no cache."""
    ours = (TF_FLAG + "=", TF_READ_ONLY_FLAG)
    kept = [f for f in current.split() if not f.startswith(ours)]
    if folder is not None:
        kept.append(f"{TF_FLAG}={folder}")
        if read_only:
            kept.append(f"{TF_READ_ONLY_FLAG}=true")
    return " ".join(kept)


def warn_tf_started(folder: Path | None, stacklevel: int = 2) -> None:
    """Warns that TensorFlow read its XLA flags before the cache was asked for (or off)."""
    what = (
        "turning the compilation cache off"
        if folder is None
        else (f"the compilation cache {str(folder)!r}")
    )
    warnings.warn(
        f"TensorFlow has already listed its devices in this process and read its XLA flags: "
        f"{what} applies to TensorFlow only in processes that call "
        f"cfcore.enable_compilation_cache (or set ${CACHE_ENV}) before TensorFlow first lists "
        f"its devices (its first op, or splitting the CPU into logical devices)",
        UserWarning,
        stacklevel=stacklevel,
    )


def _warn(sub: Path, what: str, stacklevel: int) -> None:
    warnings.warn(f"compilation cache {str(sub)!r}: {what}", UserWarning, stacklevel=stacklevel + 1)


def _is_entry(name: str) -> bool:
    # Not cfcore's sidecars, not a writer's temporary files (TensorFlow's `<entry>...tmp`), not
    # lock files.
    return not (name.endswith((SIDECAR, ".tmp")) or name.startswith("."))


def _writer_mark(pid: int) -> str:
    # A process adding entries marks the subfolder until its exit records them (`_at_exit`).
    return f".writer-{pid}"


def _other_writers(sub: Path) -> bool:
    """Whether another live process is adding entries to `sub` (its marks; dead ones removed)."""
    alive = False
    for name in os.listdir(sub):
        if not name.startswith(".writer-"):
            continue
        try:
            pid = int(name.removeprefix(".writer-"))
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                (sub / name).unlink()
        except PermissionError:
            alive = True  # another user's live process
    return alive


def _drop_bad_entries(sub: Path, others_writing: bool = False) -> tuple[int, int]:
    """Deletes the entries of `sub` that fail their sidecar, orphan sidecars and dead writers'
    temporary files; while another live process adds entries (`others_writing`), an entry with
    no sidecar yet is its own, still to be recorded at its exit, and is left alone. Returns
    (entries deleted, bad entries that could not be deleted)."""
    names = set(os.listdir(sub))
    dropped = stuck = 0
    now = time.time()
    for name in sorted(names):
        path = sub / name
        if name.endswith(SIDECAR):
            if name[: -len(SIDECAR)] not in names:
                path.unlink(missing_ok=True)  # its entry was deleted (evicted, or by hand)
            continue
        if name.endswith(".tmp"):
            try:
                if now - path.lstat().st_mtime > _STALE_TEMPORARY_SECONDS:
                    path.unlink(missing_ok=True)
            except OSError:
                pass
            continue
        if not _is_entry(name) or _valid(path, names):
            continue
        if others_writing and name + SIDECAR not in names:
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            (sub / (name + SIDECAR)).unlink(missing_ok=True)
            dropped += 1
        except OSError:
            stuck += 1
    return dropped, stuck


def _valid(entry: Path, names: set[str]) -> bool:
    if entry.name + SIDECAR not in names:
        return False  # written by a process that ended before recording it, or copied in
    try:
        want = entry.with_name(entry.name + SIDECAR).read_text().strip()
        return want == f"{_SIDECAR_FORMAT} {_digest(entry, None)}"
    except (OSError, UnicodeDecodeError, ValueError):
        return False


def _digest(entry: Path, check: Callable[[bytes], object] | None) -> str:
    """SHA-256 of the entry's name and bytes, read without updating its access time (which
    `evict` takes for last use)."""
    flags = os.O_RDONLY | getattr(os, "O_NOATIME", 0)
    try:
        fd = os.open(entry, flags)
    except PermissionError:  # O_NOATIME needs the file's owner
        fd = os.open(entry, os.O_RDONLY)
    h = hashlib.sha256(entry.name.encode() + b"\0")
    with os.fdopen(fd, "rb") as f:
        if check is not None:
            data = f.read()
            check(data)
            h.update(data)
        else:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as readable as the entries (mkstemp makes it private)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cannot_add(sub: Path) -> str:
    """Why new entries cannot be written into `sub` ("" when they can): tried, since a
    read-only mount refuses even root, whom `os.access` would let write."""
    try:
        free = shutil.disk_usage(sub).free
        fd, tmp = tempfile.mkstemp(dir=sub, prefix=".", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        return f"it is not writable ({e.strerror or e})"
    if free < MIN_FREE_BYTES:
        return f"its disk has {free / 2**20:.0f} MiB free, under {MIN_FREE_BYTES >> 20} MiB"
    return ""


def _at_exit() -> None:
    with _lock:
        subs = dict(_recorded)
        base, limit = _state.base, _state.max_bytes
    for sub, check in subs.items():
        record(sub, check)
        with contextlib.suppress(OSError):
            (sub / _writer_mark(os.getpid())).unlink(missing_ok=True)
    if base is not None:
        evict(base, limit)


def _max_bytes(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an int (bytes), got {value!r}")
    if value < 0:
        raise ArgumentValueError(f"{name} must be >= 0 bytes, got {value}")
    return value


def _env_max_bytes() -> int:
    env = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not env:
        return DEFAULT_MAX_BYTES
    try:
        value = int(env)
    except ValueError:
        raise ArgumentTypeError(
            f"${MAX_BYTES_ENV} must be a whole number of bytes, got {env!r}"
        ) from None
    return _max_bytes(value, f"${MAX_BYTES_ENV}")


def _default_folder() -> Path:
    import platformdirs  # imported here: only needed when no folder is given

    return Path(platformdirs.user_cache_dir("cfcore")) / "compilation"


def _writable(folder: str | os.PathLike[str]) -> Path:
    """`folder`, absolute, created if missing (one that exists read-only is read, not added to:
    `prepare`)."""
    path = Path(folder).expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FileAccessError(
            f"cannot create the compilation cache folder {str(path)!r}: {e}; pass a folder you "
            f"can write to (enable_compilation_cache(folder) or ${CACHE_ENV}), or turn the cache "
            f"off (${CACHE_ENV}=off)"
        ) from e
    return path
