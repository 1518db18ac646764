"""Where the command line acts on a signal, each case in its own small process (no framework).

The random-moment runs (test_signals.py) show that every interruption ends cleanly; these pin
down the rules behind them: a signal inside a deferred block waits for the next safe point, one
raised where Python would drop the exception (a garbage-collector callback) is not lost, one
does not unwind through an extension module's initialisation, and a temporary file being written
is removed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess

_ROOT = Path(__file__).resolve().parents[2]

_PRELUDE = """
import gc, os, signal, sys, time
from pathlib import Path

import pytest
from cfcore.cli._signals import deferred, handled, kept, output, stage
from cfcore.io.atomic import atomic_write
from cfcore.train.progress import between_chunks
"""


def _run(body: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_ROOT), env.get("PYTHONPATH", "")])
    code = _PRELUDE + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def _line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, (
        result.stderr
    )
    lines = [x for x in result.stderr.splitlines() if x.startswith("interrupted")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_signal_while_training_waits_for_the_end_of_the_chunk() -> None:
    result = _run("""
        with handled():
            stage("during training")
            with deferred():
                between_chunks("training", 0, 10)
                signal.raise_signal(signal.SIGTERM)
                print("the chunk goes on", flush=True)
                between_chunks("training", 3, 10)
                print("after the safe point", flush=True)
    """)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "the chunk goes on" in result.stdout
    assert "after the safe point" not in result.stdout
    assert _line(result) == "interrupted (SIGTERM) during training at step 3 of 10; nothing written"


def test_a_second_signal_does_not_wait() -> None:
    result = _run("""
        with handled():
            stage("while writing the run files")
            with deferred():
                signal.raise_signal(signal.SIGINT)
                print("first one waits", flush=True)
                signal.raise_signal(signal.SIGINT)
                print("second one did not stop it", flush=True)
    """)
    assert result.returncode == 128 + signal.SIGINT, result.stderr
    assert "first one waits" in result.stdout
    assert "second one did not stop it" not in result.stdout
    assert _line(result).startswith("interrupted (SIGINT) while writing the run files")


def test_a_deferred_block_ends_before_the_signal_acts() -> None:
    result = _run("""
        with handled():
            stage("while writing the run files")
            with deferred():
                signal.raise_signal(signal.SIGINT)
                kept("the run is in x")
            print("after the block", flush=True)
    """)
    assert result.returncode == 128 + signal.SIGINT, result.stderr
    assert "after the block" not in result.stdout
    assert _line(result) == "interrupted (SIGINT) while writing the run files; the run is in x"


def test_a_signal_inside_a_gc_callback_is_not_lost() -> None:
    # Python prints and drops an exception raised in a gc callback ("Exception ignored"): the
    # handler must act on the signal once the callback has returned.
    result = _run("""
        fired = []

        def callback(phase, info):
            if phase == "start" and not fired:
                fired.append(1)
                signal.raise_signal(signal.SIGINT)

        gc.callbacks.append(callback)
        with handled():
            stage("while loading the data")
            gc.collect()
            for _ in range(500):  # up to 5 s for the handler to come back
                time.sleep(0.01)
            print("never interrupted", flush=True)
    """)
    assert result.returncode == 128 + signal.SIGINT, (result.stdout, result.stderr)
    assert "never interrupted" not in result.stdout
    assert _line(result) == "interrupted (SIGINT) while loading the data; nothing written"


def test_a_signal_while_an_extension_module_initialises_waits_for_it() -> None:
    # An exception unwinding through an extension module's C initialisation can crash it (SIGINT
    # in `import jax` ended in a segmentation fault): the handler acts once the module is in
    # place. A loader of that kind stands in for the C code here.
    result = _run("""
        import importlib.machinery, importlib.util, types

        class Loader(importlib.machinery.ExtensionFileLoader):
            def create_module(self, spec):
                signal.raise_signal(signal.SIGINT)
                for _ in range(10):  # bytecodes run: a handler that raises would raise here
                    time.sleep(0.01)
                print("module created", flush=True)
                return types.ModuleType(spec.name)

            def exec_module(self, module):
                pass

        spec = importlib.util.spec_from_loader("ext", Loader("ext", "/nowhere/ext.so"))
        with handled():
            stage("while importing the framework")
            importlib.util.module_from_spec(spec)
            for _ in range(500):  # up to 5 s for the handler to come back
                time.sleep(0.01)
            print("never interrupted", flush=True)
    """)
    assert result.returncode == 128 + signal.SIGINT, (result.stdout, result.stderr)
    assert "module created" in result.stdout
    assert "never interrupted" not in result.stdout
    assert _line(result) == "interrupted (SIGINT) while importing the framework; nothing written"


def test_a_signal_as_the_command_ends_ends_it_cleanly() -> None:
    # The command has ended (Typer's SystemExit(0)) and the signal lands in the context manager's
    # `__exit__`, before `handled` sees the exit: one line and 130, no traceback (seen in CI).
    result = _run("""
        from cfcore.cli._signals import run

        fired = []

        def at_exit(frame, event, arg):
            if event == "call" and frame.f_code.co_name == "__exit__" and not fired:
                fired.append(1)
                signal.raise_signal(signal.SIGINT)

        def command():
            stage("while writing out.csv")
            kept("out.csv is written")
            sys.setprofile(at_exit)
            raise SystemExit(0)

        run(command)
        print("never here", flush=True)
    """)
    assert result.returncode == 128 + signal.SIGINT, (result.stdout, result.stderr)
    assert "never here" not in result.stdout
    assert _line(result).startswith("interrupted (SIGINT) ")
    assert _line(result).endswith("; out.csv is written")


def test_a_file_being_written_leaves_no_temporary(tmp_path: Path) -> None:
    result = _run(f"""
        folder = Path({str(tmp_path)!r})
        with handled():
            output(folder)
            stage("while writing x.txt")

            def write(p):
                p.write_text("half")
                signal.raise_signal(signal.SIGTERM)
                p.write_text("whole")

            atomic_write(folder / "x.txt", write)
    """)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert _line(result) == "interrupted (SIGTERM) while writing x.txt; nothing written"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_ends_with_one_line(signum: int) -> None:
    # The console script's first half second, before cfcore.cli installs its handlers: the
    # package's own import guards it (a script named `cfcore`), and the line says so.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_ROOT), env.get("PYTHONPATH", "")])
    code = (
        "import os, signal, sys, time\n"
        "sys.argv[0] = os.path.join(os.path.dirname(sys.executable), 'cfcore')\n"
        "import cfcore\n"
        f"os.kill(os.getpid(), {int(signum)})\n"
        "time.sleep(30)\n"
        "print('never interrupted')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 128 + signum, (result.stdout, result.stderr)
    name = signal.Signals(signum).name
    assert _line(result) == f"interrupted ({name}) during start-up; nothing written"


def test_importing_cfcore_installs_no_handler() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import signal, cfcore\n"
         "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
         "assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL\n"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(_ROOT)}, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
