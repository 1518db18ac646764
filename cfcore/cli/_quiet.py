"""Quiet start-up for the `cfcore` commands: the frameworks' own log lines stay off stderr.

TensorFlow writes absl/glog lines (`I0000 ... oneDNN custom operations are on`, `E0000 ...
failed call to cuInit`) straight to file descriptor 2 from C++, and JAX warns through Python's
`logging` when it finds no GPU. To a user of the command line they look like errors. Unless the
user passes `cfcore -v`, `configure` therefore, before any framework is imported:

* sets `TF_CPP_MIN_LOG_LEVEL=3` (TensorFlow's C++ log after absl is initialised; the user's own
  value, if set, wins): framework errors still reach the user as Python exceptions;
* raises the level of JAX's start-up logger to ERROR;
* has the backend registry import a framework inside `filtered_stderr`, which catches what is
  written to fd 2 during the import and writes back every line except the start-up noise
  (absl's pre-initialisation lines ignore every setting: only catching them works).

The library itself (`import cfcore`, `cfcore.get_backend`) leaves the frameworks' logging alone:
only the command line decides for the user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator

from ..backend import registry

QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3"}
"""Environment set (unless already set) before a framework is imported, without `-v`."""

QUIET_LOGGERS = ("jax._src.xla_bridge", "jax._src.cloud_tpu_init")
"""Python loggers of the frameworks' start-up warnings (no GPU/TPU found), raised to ERROR."""

# absl's notice before its initialisation, and glog-style lines of level I or W
# ("I0000 00:00:1795977857.149210   27268 port.cc:153] ..."), and E lines about a missing CUDA.
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] "
    r"|E\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] .*(?i:cuda|cuinit|cudnn|cufft|cublas|tensorrt))"
)


def is_noise(line: str) -> bool:
    """Whether `line` is one of the frameworks' start-up log lines that quiet mode drops."""
    return _NOISE.match(line) is not None


def configure(verbose: bool) -> Callable[[], None]:
    """Silences the frameworks' start-up logging, or (`verbose`) leaves it as it is.

    Args:
        verbose: the user's `-v`: change nothing, so every framework line goes through.

    Returns:
        A function that puts back what was changed (the environment, the loggers' levels and
        the registry's import guard): the command line calls it when the command ends, so that
        a command run inside another program (tests, notebooks) leaves no trace.
    """
    saved_guard = registry.import_guard
    saved_env = {name: os.environ.get(name) for name in QUIET_ENV}
    saved_levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}

    def restore() -> None:
        registry.import_guard = saved_guard
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)

    if verbose:
        registry.import_guard = contextlib.nullcontext
        return restore
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    registry.import_guard = filtered_stderr
    return restore


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Catches what is written to fd 2 inside the block and writes back all but the noise.

    Works at the file-descriptor level because the frameworks' C++ code writes there directly,
    past `sys.stderr`. Without a usable fd 2 it does nothing.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            # fd 2 back first: an interruption (cfcore.cli._signals) prints its line there.
            os.dup2(saved, 2)
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.close(saved)
            caught.seek(0)
            text = caught.read().decode("utf-8", errors="replace")
            kept = "".join(x for x in text.splitlines(keepends=True) if not is_noise(x))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
