"""Ctrl-C and SIGTERM at evenly spread moments of a real `cfcore` command: how each run ended.

    python benchmarks/interrupt_stress.py --runs 240 --from 0.2 --to 1.2 -- \
        neighbors Aladdin --model runs/x --backend jax

Each run is a fresh process; the signal goes `delay` seconds after the command line's handlers
are in (read from /proc/<pid>/status), the delays spread evenly over [from, to], two processes
at a time (as tests/reliability/test_signals.py runs them). A clean end is exit 0 (finished
first) or 128 + signum. For any other end the script keeps the Python stacks that
`faulthandler` wrote at the crash: the command line captures fd 2 while a framework is
imported, so a crash there says nothing on stderr.

`--tree DIR` runs the cfcore found in DIR (a worktree of an older commit, say) instead of this
one, to compare before and after a change in one sitting.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import stamp, write_result

_ROOT = Path(__file__).resolve().parents[1]

_WRAPPER = """
import faulthandler, os, sys
faulthandler.enable(open(os.environ["STRESS_FAULT_LOG"], "w"), all_threads=True)
sys.argv = ["cfcore", *sys.argv[1:]]
from cfcore.cli import main
main()
"""


def _handlers_installed(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    found = re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M)
    return found is None or bool(int(found.group(1), 16) >> (signal.SIGTERM - 1) & 1)


def _one(argv: list[str], delay: float, signum: int, tree: Path, log: Path) -> tuple[int, str]:
    env = dict(os.environ, STRESS_FAULT_LOG=str(log))
    env["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "backends")])
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRAPPER, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    while not _handlers_installed(proc.pid):
        time.sleep(0.005)
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < delay:
        time.sleep(0.005)
    if proc.poll() is None:
        proc.send_signal(signum)
    _, err = proc.communicate()
    crash = log.read_text() if log.exists() else ""
    if proc.returncode in (0, 128 + signum):
        return proc.returncode, ""
    return proc.returncode, crash or err


def main() -> None:
    p = argparse.ArgumentParser(description="Ctrl-C and SIGTERM at spread moments of a command.")
    p.add_argument("--runs", type=int, default=120)
    p.add_argument("--from", dest="lo", type=float, default=0.0)
    p.add_argument("--to", dest="hi", type=float, default=2.0)
    p.add_argument("--signal", choices=["SIGINT", "SIGTERM"], default="SIGINT")
    p.add_argument("--tree", type=Path, default=_ROOT)
    p.add_argument("--name", default="interrupt_stress")
    p.add_argument("--out-dir", type=Path, default=None, help="default: benchmarks/results")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the cfcore command")
    args = p.parse_args()
    argv = [a for a in args.command if a != "--"]
    signum = signal.Signals[args.signal]
    delays = [args.lo + (args.hi - args.lo) * i / max(args.runs - 1, 1) for i in range(args.runs)]
    with tempfile.TemporaryDirectory() as tmp:
        logs = [Path(tmp) / f"{i}.log" for i in range(args.runs)]
        with ThreadPoolExecutor(max_workers=2) as pool:
            ends = list(
                pool.map(
                    lambda i: _one(argv, delays[i], signum, args.tree, logs[i]), range(args.runs)
                )
            )
    counts = Counter(rc for rc, _ in ends)
    bad = [(d, rc, text) for d, (rc, text) in zip(delays, ends, strict=True) if text]
    lines = [
        f"# Interruptions of `cfcore {' '.join(argv)}`",
        "",
        stamp(),
        "",
        f"{args.runs} runs, {args.signal} {args.lo:g}-{args.hi:g} s after the handlers were in, "
        f"cfcore from `{args.tree}`. Exit codes: "
        + ", ".join(f"{rc}: {n}" for rc, n in sorted(counts.items())),
        "",
    ]
    for delay, rc, text in bad:
        stack = [x for x in text.splitlines() if x.startswith(("Fatal", "  File"))][:8]
        lines += [f"- exit {rc} at {delay:.3f} s:", "", "```", *stack, "```", ""]
    text = "\n".join(lines) + "\n"
    print(text)
    write_result(args.name + ".md", text, args.out_dir)


if __name__ == "__main__":
    main()
