"""The `cfcore` console script's first moments: SIGINT and SIGTERM before its handlers exist.

Importing cfcore and its dependencies takes about half a second (seconds on a loaded machine)
before `cfcore.cli.main` installs the command line's handlers (`cfcore.cli._signals`). A signal
in that window would otherwise end in a `KeyboardInterrupt` traceback or a silent rc −15. The
package's `__init__` calls `guard_startup` first thing; it acts only when the process is the
console script (`sys.argv[0]` named `cfcore`) or `python -m cfcore.cli`, so a library user's
program keeps Python's own handling. Standard library only: nothing else is imported yet.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType


def _interrupted(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    os.write(2, f"interrupted ({name}) during start-up; nothing written\n".encode())
    os._exit(128 + signum)


def guard_startup() -> None:
    """Ends the console script with one line and `128 + signum` on SIGINT or SIGTERM, until
    `cfcore.cli._signals` replaces these handlers with the commands' own."""
    argv0 = sys.argv[0] if sys.argv else ""
    orig = list(getattr(sys, "orig_argv", []))
    as_module = any(a == "-m" and b == "cfcore.cli" for a, b in zip(orig, orig[1:], strict=False))
    if os.path.basename(argv0) != "cfcore" and not as_module:
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupted)
