"""Clean interruption of the `cfcore` commands: SIGINT and SIGTERM end a command with one line.

Without this, Ctrl-C during `cfcore train` on JAX often ended in "Fatal Python error:
Segmentation fault". Python's default SIGINT handler raised `KeyboardInterrupt` in the main
thread while XLA was still compiling the first chunk on its own thread pool; the interpreter then
shut down and destroyed the PjRt client under that compile, whose thread crashed in
`xla::ifrt::SingleDeviceSharding::Create` on a device already freed (seen in a core dump). The
frameworks' threads cannot be stopped from Python, so the fix is not to shut the interpreter down
under them:

* `handled` (used by `cfcore.cli.main` only: the library installs no handler) installs handlers
  for SIGINT and SIGTERM that raise `cfcore.errors.Interrupted` in the main thread, or, inside a
  `deferred` block (training, writing a run), note the signal and raise it at the next safe point
  (`cfcore.train.progress.between_chunks`, called by the trainer between two compiled chunks) or
  at the end of the block. A second signal does not wait.
* When `Interrupted` reaches `handled` (also as the cause of Typer's own exit, which turns every
  `KeyboardInterrupt` into exit code 130), the command's temporary files are removed, one line
  says what was interrupted and what was kept (`interrupted (SIGINT) during training at step 40
  of 200; nothing written`), stdout and stderr are flushed, and the process ends with
  `os._exit(128 + signum)`: no interpreter shutdown, so no framework teardown under a running
  thread.

The commands say where they are with `stage`, what is safely on disk with `kept`, and which
folders they write into with `output` (searched for this process's temporary files).
"""

from __future__ import annotations

import _thread
import atexit
import contextlib
import gc
import importlib.machinery
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from ..errors import Interrupted
from ..train import progress

SIGNALS = (signal.SIGINT, signal.SIGTERM)

# The unit of each loop that reports to `between_chunks`.
_UNITS = {"training": "step", "sampling": "sweep", "scoring": "user"}


@dataclass
class _Command:
    """What the running command has told us, for the interruption line and the clean-up."""

    stage: str = "during start-up"
    loop: tuple[str, int, int] | None = None
    kept: str = "nothing written"
    folders: list[Path] = field(default_factory=list)
    deferring: int = 0
    pending: int | None = None
    raised: bool = False
    exiting: bool = False
    retrying: bool = False


_command = _Command()


def stage(text: str) -> None:
    """Names what the command does now, as the line will say it (`"while loading the data"`).

    Also a safe point: a signal whose `Interrupted` was swallowed on its way (see `_on_signal`)
    is raised again here.
    """
    _check()
    _command.stage = text
    _command.loop = None


def kept(text: str) -> None:
    """Says what an interruption from now on leaves on disk (`"the run is in runs/x"`)."""
    _command.kept = text


def output(folder: Path) -> None:
    """Adds a folder the command writes into: an interruption removes its temporary files."""
    _command.folders.append(folder)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block that a first signal does not cut short: it ends at the next safe point inside it
    (between two compiled chunks), or at its end."""
    _command.deferring += 1
    try:
        yield
    finally:
        _command.deferring -= 1
    _check()


def _check() -> None:
    """Raises `Interrupted` for a signal received and not yet acted on, unless deferred."""
    if _command.pending is not None and not _command.deferring:
        _raise(_command.pending)


def _raise(signum: int) -> None:
    _command.raised = True
    raise Interrupted(signum)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Python runs this in the main thread between two bytecodes, wherever it is: also inside a
    # garbage-collector callback or a __del__, where a raised exception is printed as "Exception
    # ignored" and dropped. So the signal is also kept in `pending` and raised again at every
    # safe point, and at the latest when the command ends (`handled`); and where the frame is
    # such a place, the handler does not raise but runs again shortly (`_retry`).
    retry, _command.retrying = _command.retrying, False
    if retry:
        if _command.pending is None or _command.raised or _command.deferring:
            return
        if _swallows(frame):
            _retry()
            return
        _raise(_command.pending)
    if _command.exiting or _command.raised:
        # The command already ends (or the interpreter does): do not wait for it.
        _exit(_command.pending or signum)
    if _command.deferring and _command.pending is None:
        _command.pending = signum
        return
    _command.pending = _command.pending or signum
    if _swallows(frame) and not _command.deferring:
        _retry()
        return
    _raise(_command.pending)


def _swallows(frame: FrameType | None) -> bool:
    """Whether an exception raised in `frame` would be dropped or do harm: the frame runs
    (under) a garbage-collector callback or a `__del__` method, or under the initialisation of
    an extension module.

    An exception that unwinds through an extension module's C initialisation can crash it:
    SIGINT while `import jax` created `jaxlib`'s extension module ended in a segmentation
    fault (about 1 run in 60 with the signal sent in the framework's import); 20 ms later the
    module is in place and the exception is harmless.
    """
    callbacks = {getattr(c, "__code__", None) for c in gc.callbacks}
    while frame is not None:
        code = frame.f_code
        if code in callbacks or code.co_name == "__del__" or _initialises_extension(frame):
            return True
        frame = frame.f_back
    return False


def _initialises_extension(frame: FrameType) -> bool:
    """Whether `frame` is the import system creating or executing an extension module."""
    if frame.f_code.co_name not in ("create_module", "exec_module"):
        return False
    loader = frame.f_locals.get("self")
    return isinstance(loader, importlib.machinery.ExtensionFileLoader)


def _retry() -> None:
    """Runs the handler again in 20 ms, as if the signal arrived then."""

    def again() -> None:
        _command.retrying = True
        _thread.interrupt_main(signal.Signals(_command.pending or signal.SIGINT))

    timer = threading.Timer(0.02, again)
    timer.daemon = True
    timer.start()


def _safe_point(what: str, done: int, total: int) -> None:
    _command.loop = (what, done, total)
    if _command.pending is not None:
        _raise(_command.pending)


def _line(signum: int) -> str:
    name = signal.Signals(signum).name
    where = _command.stage
    if _command.loop is not None:
        what, done, total = _command.loop
        unit = _UNITS.get(what, "step")
        where = (
            f"during {what} at {unit} {done} of {total}"
            if done
            else f"during {what}, before its first {unit} of {total} ended"
        )
    return f"interrupted ({name}) {where}; {_command.kept}"


_printed = False


def _exit(signum: int) -> None:
    """Removes the command's temporary files, prints the line once and ends the process."""
    global _printed
    from ..io.atomic import remove_own_temporaries

    # Later signals must not interrupt the clean-up itself.
    for s in SIGNALS:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(s, signal.SIG_IGN)
    for folder in _command.folders:
        remove_own_temporaries(folder)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    if not _printed:
        _printed = True
        with contextlib.suppress(Exception):
            sys.stderr.write(_line(signum) + "\n")
            sys.stderr.flush()
    # Not sys.exit: interpreter shutdown would tear the frameworks down under their threads.
    os._exit(128 + signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Runs the command line with the handlers installed, and ends the process after it.

    An interruption ends it as the module says. A command that ends otherwise (`sys.exit`, as
    Typer always ends) runs the `atexit` functions with the handlers still installed, then ends
    with `os._exit` too: Python's own shutdown would put the default handlers back first (a
    SIGTERM then killed the process silently while the frameworks were torn down) and tear the
    frameworks down under their threads. Any other exception (a bug) propagates as usual.
    """
    for s in SIGNALS:
        signal.signal(s, _on_signal)
    progress.safe_point = _safe_point
    try:
        yield
    except SystemExit as err:
        _interrupted_by(err)
        _end(err.code)
    except BaseException as err:
        _interrupted_by(err)
        _exiting()
        raise
    _end(0)


def run(command: Callable[[], object]) -> None:
    """Runs `command` inside `handled`, and ends the process cleanly also for a signal that
    lands between the command's end and `handled` seeing it.

    Python runs the handler between any two bytecodes: a signal as the command's `SystemExit`
    (Typer's normal end) travels into `handled`'s `__exit__`, before the generator receives it,
    raises `Interrupted` out of the `with` block (seen in CI: a traceback after `cfcore
    recommend` had finished). The first signal's handler has marked the exception raised, so a
    second one ends the process at once and cannot interrupt this clause.
    """
    try:
        with handled():
            command()
    except Interrupted as err:
        _exit(err.signum)


def _interrupted_by(err: BaseException) -> None:
    """Ends the process if `err` comes from an interruption."""
    # Typer turns a KeyboardInterrupt into its Exit(130), and that into SystemExit: the
    # Interrupted is somewhere in the chain of causes.
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, Interrupted):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, Interrupted):
        _exit(cause.signum)


def _end(code: object) -> None:
    """Ends the process as `sys.exit(code)` would, the `atexit` functions run first."""
    _exiting()
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): the message on stderr, status 1
        with contextlib.suppress(Exception):
            sys.stderr.write(f"{code}\n")
        status = 1
    atexit._run_exitfuncs()  # flushes logging, runs weakref finalizers, clears JAX's backends
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if _command.pending is not None:  # arrived during the atexit functions
        _exit(_command.pending)
    os._exit(status)


def _exiting() -> None:
    if _command.pending is not None:  # received, but its Interrupted was swallowed
        _exit(_command.pending)
    _command.stage, _command.loop = "while exiting", None
    _command.exiting = True
