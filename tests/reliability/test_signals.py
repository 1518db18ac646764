"""SIGINT and SIGTERM at random moments of real `cfcore` commands, in separate processes.

Each run must end with exit code 128 + signum (or 0 when it finished first), print exactly one
`interrupted (...)` line and nothing like a traceback or a crash, leave no temporary file, and
have on disk what its line says was kept. The random moments are seeded, and measured from when
the command line's handlers are in place (read from /proc/<pid>/status, not slept on), across
the framework's import, loading, compiling, training and writing.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ..conftest import BACKENDS, require_backend

pytestmark = [
    pytest.mark.slow,
    pytest.mark.subprocess,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/<pid>/status"),
]

_ROOT = Path(__file__).resolve().parents[2]
_LINE = re.compile(r"^interrupted \((SIGINT|SIGTERM)\) (.+); (.+)$")
_BAD = ("Traceback", "Fatal Python error", "Exception ignored", "Segmentation fault")
RUNS_PER_BACKEND = 6


def _env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(_ROOT), str(_ROOT / "backends"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def _handlers_installed(pid: int) -> bool:
    """Whether process `pid` catches SIGTERM (only the command line's handler does)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # it has ended: nothing to wait for
    found = re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M)
    assert found is not None, status
    return bool(int(found.group(1), 16) >> (signal.SIGTERM - 1) & 1)


def _start(args: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfcore.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        text=True,
    )
    deadline = time.monotonic() + 60
    while not _handlers_installed(proc.pid):
        assert time.monotonic() < deadline, "the command line never installed its handlers"
        time.sleep(0.005)  # polling /proc: there is no event to wait on
    return proc


def _interrupt(args: list[str], delay: float, signum: int, folder: Path) -> tuple[int, str, str]:
    """Runs `cfcore *args`, sends `signum` `delay` s after its handlers are in; checks the end.

    Returns:
        The exit code, the interruption line's "what was kept" part ("" if it finished) and
        stderr.
    """
    proc = _start(args)
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < delay:
        time.sleep(0.005)
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(
            f"cfcore {args} did not end after {signal.Signals(signum).name}"
        ) from None
    context = f"cfcore {' '.join(args)}: {signal.Signals(signum).name} after {delay:.2f} s\n{err}"
    for bad in _BAD:
        assert bad not in err, context
    lines = [x for x in err.splitlines() if x.startswith("interrupted")]
    temporaries = list(folder.rglob("*.tmp")) if folder.exists() else []
    assert not temporaries, (temporaries, context)
    if proc.returncode == 0:
        assert not lines, context
        return 0, "", err
    assert proc.returncode == 128 + signum, (proc.returncode, context)
    assert len(lines) == 1, context
    match = _LINE.match(lines[0])
    assert match and match.group(1) == signal.Signals(signum).name, context
    return proc.returncode, match.group(3), err


def _check_kept(kept: str, out: Path, files: tuple[str, ...]) -> None:
    """What the line says was kept is what is on disk."""
    present = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if kept == "nothing written":
        assert present == [], (kept, present)
    elif kept.startswith("the run is in"):
        assert set(files) <= set(present), (kept, present)
        import cfcore

        cfcore.load(out / "model.npz")  # complete, not half a file
    else:
        assert "may be incomplete" in kept, kept


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_interrupted_at_random_moments(backend: str, ml100k_files, tmp_path: Path) -> None:
    require_backend(backend)
    from cfcore.cli.train import RUN_FILES

    rng = random.Random(f"signals-{backend}")

    def args(out: Path, model: str) -> list[str]:
        return ["train", "--backend", backend, "--dataset", str(ml100k_files), "--model", model,
                "--steps", "30", "--dim", "8", "--out", str(out), "--no-report",
                *(["--no-progress"] if rng.random() < 0.5 else [])]  # fmt: skip

    # One whole run sets the range of the delays (start-up to the last file written).
    start = time.monotonic()
    rc, _, err = _interrupt(args(tmp_path / "whole", "wals"), 1e9, signal.SIGINT, tmp_path)
    assert rc == 0, err
    length = time.monotonic() - start
    plans = []
    for i in range(RUNS_PER_BACKEND):
        model = rng.choice(["wals", "regularized", "biased"])
        signum = rng.choice([signal.SIGINT, signal.SIGTERM])
        # A quarter in the first half second (the framework's import), the rest anywhere.
        delay = rng.uniform(0, 0.5) if rng.random() < 0.25 else rng.uniform(0, 1.1 * length)
        plans.append((tmp_path / f"run{i}", args(tmp_path / f"run{i}", model), delay, signum))

    def one(plan: tuple[Path, list[str], float, int]) -> int:
        out, argv, delay, signum = plan
        rc, kept, _ = _interrupt(argv, delay, signum, out)
        if rc:
            _check_kept(kept, out, RUN_FILES)
        return rc

    outcomes = _each(one, plans)
    assert sum(rc != 0 for rc in outcomes) >= RUNS_PER_BACKEND // 2, outcomes


def _each(run, plans: list) -> list:
    """`run` on each plan, two processes at a time: the runs are mostly waiting on imports."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(run, plans))


def test_other_commands_interrupted(ml100k_files, tmp_path: Path) -> None:
    """recommend, neighbors, explore, tune and compare end the same way."""
    require_backend("jax")
    model = tmp_path / "model"
    rc, _, err = _interrupt(
        ["train", "--dataset", str(ml100k_files), "--steps", "5", "--dim", "8",
         "--out", str(model), "--no-report", "--no-progress"],
        1e9, signal.SIGINT, tmp_path,
    )  # fmt: skip
    assert rc == 0, err
    rng = random.Random("signals-commands")

    def commands(out: Path) -> list[list[str]]:
        listed = [
            ["recommend", "--model", str(model), "--all-users", "--backend", "jax",
             "--out", str(out / "all.csv")],
            ["neighbors", "Aladdin", "--model", str(model), "--backend", "jax"],
            ["explore", "--dataset", str(ml100k_files), "--out", str(out)],
            ["tune", "--model", "wals", "--dataset", str(ml100k_files), "--backend", "jax",
             "--grid", "regularization_coeff=0.1,1,10", "--steps", "3", "--out", str(out)],
        ]  # fmt: skip
        trainable = [b for b in BACKENDS if b in _installed()]
        if len(trainable) >= 2:
            listed.append(["compare", "--dataset", str(ml100k_files), "--backends",
                           ",".join(trainable[:2]), "--steps", "20"])  # fmt: skip
        return listed

    count = len(commands(tmp_path))
    # Two runs of each command, the pair at once: each run has its own folder, because the
    # check for temporaries left behind must not see the other run's files still being written.
    plans = [
        (commands(tmp_path / f"{i}-{j}")[i], rng.uniform(0, 2.0),
         rng.choice([signal.SIGINT, signal.SIGTERM]), tmp_path / f"{i}-{j}")
        for i in range(count)
        for j in range(2)
    ]  # fmt: skip
    outcomes = _each(lambda plan: _interrupt(*plan)[0], plans)
    assert sum(rc != 0 for rc in outcomes) >= count, outcomes


def _installed() -> list[str]:
    import cfcore

    return cfcore.available_backends()
