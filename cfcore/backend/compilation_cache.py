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

Tracing and lowering the Python functions is not cached (0.4-0.7 s on ml-100k's sweep); the
programs' compilation is. Each framework keeps its programs in a subfolder of its own, named for
its version and the CPU's features (`subfolder`), and keys them by the program itself: a stale
entry is never used, only left behind (delete the folder to reclaim the space).

Enable it with `enable_compilation_cache(folder)` or, without code, with the environment variable
`CFCORE_COMPILATION_CACHE` set to a folder before the backend is first used.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import warnings
from pathlib import Path

from ..errors import ArgumentTypeError, FileAccessError

CACHE_ENV = "CFCORE_COMPILATION_CACHE"
TF_FLAG = "--tf_xla_persistent_cache_directory"

_folder: Path | None = None


def enable_compilation_cache(folder: str | os.PathLike[str] | None = None) -> Path:
    """Keeps compiled programs in `folder`, so that later processes load instead of compiling.

    Applies to the JAX and TensorFlow backends, whether already loaded or loaded later in this
    process (other backends compile no XLA programs and ignore it). Nothing is cleaned up: the
    folder grows by one entry per distinct program (tens of KiB each).

    Args:
        folder: where to keep them; created if missing. None: `$CFCORE_COMPILATION_CACHE`, else
            the folder `compiled/` in cfcore's user cache folder (`platformdirs`).

    Returns:
        The folder, absolute.

    Raises:
        ArgumentTypeError: `folder` is not a path.
        FileAccessError: the folder is empty (""), cannot be created or is not writable.

    Warns:
        UserWarning: TensorFlow has already listed its devices in this process (it has run an
            op, or the CPU was split into logical devices), so it has read its XLA flags: its
            cache starts only in processes that enable it before that (JAX's applies at once).

    Example:
        >>> import cfcore
        >>> cfcore.enable_compilation_cache("~/.cache/cfcore-xla")  # doctest: +SKIP
    """
    global _folder
    if folder is None:
        folder = os.environ.get(CACHE_ENV) or _default_folder()
    if not isinstance(folder, str | os.PathLike):
        raise ArgumentTypeError(
            f"folder must be a path (str or os.PathLike) or None, got {type(folder).__name__}"
        )
    path = _folder = _writable(folder)
    for module in ("cfcore_jax", "cfcore_tf"):
        # A backend already loaded takes it now; one loaded later asks `folder()` at import.
        hook = getattr(sys.modules.get(module), "use_compilation_cache", None)
        if hook is not None:
            hook(path, stacklevel=3)
    return path


def folder() -> Path | None:
    """The cache folder when the cache is on (`enable_compilation_cache` or
    `$CFCORE_COMPILATION_CACHE`), else None. Asked by a backend when it is imported."""
    global _folder
    if _folder is None:
        env = os.environ.get(CACHE_ENV)
        if not env:
            return None
        _folder = _writable(env)  # the asking backend applies it itself
    return _folder


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


def _default_folder() -> Path:
    import platformdirs  # imported here: only needed when no folder is given

    return Path(platformdirs.user_cache_dir("cfcore")) / "compiled"


def _writable(folder: str | os.PathLike[str]) -> Path:
    """`folder`, absolute, created if missing."""
    text = os.fsdecode(os.fspath(folder))
    if not text.strip():
        # Path("") is the current folder: a cache there would litter the working tree.
        raise FileAccessError(f"the compilation cache folder is empty ({text!r}): give a folder")
    if "\0" in text:
        raise FileAccessError(f"the compilation cache folder {text!r} contains a NUL byte")
    path = Path(text).expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FileAccessError(
            f"cannot create the compilation cache folder {str(path)!r}: {e}"
        ) from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise FileAccessError(
            f"the compilation cache folder {str(path)!r} is not writable; pass a folder you can "
            f"write to (enable_compilation_cache(folder) or ${CACHE_ENV})"
        )
    return path


def tf_xla_flags(current: str, folder: Path) -> str:
    """`TF_XLA_FLAGS` with the persistent cache folder set to `folder` (any earlier setting of
    that flag replaced, the other flags kept)."""
    kept = [f for f in current.split() if not f.startswith(TF_FLAG + "=")]
    return " ".join([*kept, f"{TF_FLAG}={folder}"])


def warn_tf_started(folder: Path, stacklevel: int = 2) -> None:
    """Warns that TensorFlow read its XLA flags before the cache was asked for."""
    warnings.warn(
        f"TensorFlow has already listed its devices in this process and read its XLA flags: the "
        f"compilation cache {str(folder)!r} applies to TensorFlow only in processes that call "
        f"cfcore.enable_compilation_cache (or set ${CACHE_ENV}) before TensorFlow first lists "
        f"its devices (its first op, or splitting the CPU into logical devices)",
        UserWarning,
        stacklevel=stacklevel,
    )
