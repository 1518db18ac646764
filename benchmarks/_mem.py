"""Peak memory of one benchmark configuration, measured in a fresh subprocess.

The parent (`run_isolated`) starts `python benchmarks/_mem.py --child SCRIPT FUNCTION`, sends the
configuration as JSON on stdin, watches the child's resident size and kills it if it passes the
memory budget (the machine is shared: a configuration that would not fit must not take the others
down with it). The child loads SCRIPT, calls `FUNCTION(config, meter)` and prints its result as
one JSON line.

The `Meter` handed to the function reads Linux's resident high-water mark (`VmHWM`), and resets it
through `/proc/self/clear_refs` so that each phase (after the imports, after the data is on the
device, during the loss, during the steps) gets its own peak. Where the reset is not allowed, a
sampling thread (every 2 ms, psutil) stands in for it. On a GPU (`device="gpu"`) the meter reads
XLA's `peak_bytes_in_use` instead (monotone: it cannot be reset within a process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARK = "@@cfcore-bench-result "
GB = 1024**3


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the baseline keeps some garbage
        pass


def current_rss() -> int:
    """Resident set size of this process, bytes."""
    return _status_kb("VmRSS") * 1024


class Meter:
    """Peak resident memory of the current process, phase by phase.

    Usage in a benchmark function: `meter.mark("imports")` once the framework is imported,
    `meter.mark("setup")` once data and parameters are on the device (this also resets the peak),
    then `meter.peak()` after the work whose peak is wanted, `meter.reset()` before the next phase.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.marks: dict[str, int] = {}
        self._sampled_peak = 0
        self._sampler: threading.Thread | None = None
        self._can_reset = self._try_reset()
        if not self._can_reset and device == "cpu":
            self._start_sampler()

    # ---------------------------------------------------------------- peak tracking
    @staticmethod
    def _try_reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # "reset the peak resident set size" (Linux >= 4.0)
            return True
        except OSError:
            return False

    def _start_sampler(self) -> None:
        import psutil

        proc = psutil.Process()

        def sample() -> None:
            while True:
                self._sampled_peak = max(self._sampled_peak, proc.memory_info().rss)
                time.sleep(0.002)

        self._sampler = threading.Thread(target=sample, daemon=True)
        self._sampler.start()

    def _gpu_peak(self) -> int:
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return int(stats.get("peak_bytes_in_use", 0))

    def reset(self) -> None:
        """Starts a new phase: the next `peak()` counts from the current resident size."""
        if self.device == "gpu":
            return
        if self._can_reset:
            self._try_reset()
        else:
            self._sampled_peak = current_rss()

    def peak(self) -> int:
        """Peak bytes since the last `reset()` (host RSS; on a GPU, XLA's peak bytes in use)."""
        if self.device == "gpu":
            return self._gpu_peak()
        if self._can_reset:
            return _status_kb("VmHWM") * 1024
        return max(self._sampled_peak, current_rss())

    def mark(self, name: str, *, reset: bool = True) -> int:
        """Records the current resident size as `name` (e.g. "imports", "setup"); resets the peak.

        Freed heap memory is first handed back to the system (`malloc_trim`), so that garbage from
        the setup (data generation) is not counted in the baseline.
        """
        if self.device != "gpu":
            _malloc_trim()
        now = self._gpu_current() if self.device == "gpu" else current_rss()
        self.marks[name] = now
        if reset:
            self.reset()
        return now

    def _gpu_current(self) -> int:
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return int(stats.get("bytes_in_use", 0))


@dataclass
class Isolated:
    """What came back from one isolated run.

    Attributes:
        status: "ok"; "over budget" (killed by the watchdog); "killed" (a signal, e.g. the kernel's
            OOM killer); "timeout"; or "error".
        result: the function's dict (with the meter's marks under "marks") when status is "ok".
        message: why it failed, in words (with the child's last stderr lines for an error).
        max_rss: the largest resident size the watchdog saw, bytes.
        seconds: wall time of the child.
    """

    status: str
    result: dict[str, Any] | None = None
    message: str = ""
    max_rss: int = 0
    seconds: float = 0.0
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _rss_of(pid: int) -> int:
    """Resident size of another process, bytes (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_isolated(
    script: str | os.PathLike[str],
    function: str,
    config: dict[str, Any],
    *,
    budget_bytes: int | None,
    timeout_s: float = 600.0,
    env: dict[str, str] | None = None,
) -> Isolated:
    """Runs `function(config, meter)` from `script` in a fresh Python process.

    Args:
        script: path of the benchmark script that defines `function`.
        function: name of a module-level function `(config: dict, meter: Meter) -> dict`.
        config: JSON-serialisable configuration.
        budget_bytes: the child is killed when its resident size passes this (None: no limit).
        timeout_s: wall-clock limit.
        env: extra environment variables for the child (e.g. `JAX_PLATFORMS`).

    Returns:
        An `Isolated` record; never raises for a failing child.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(script), function]
    child_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryDirectory(prefix="cfcore-bench-") as tmp:
        out_path, err_path = Path(tmp) / "out", Path(tmp) / "err"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, text=True, env=child_env
            )
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(config))
            proc.stdin.close()
            status, max_rss = "", 0
            while proc.poll() is None:
                rss = _rss_of(proc.pid)
                max_rss = max(max_rss, rss)
                if budget_bytes is not None and rss > budget_bytes:
                    status = "over budget"
                    proc.send_signal(signal.SIGKILL)
                elif time.perf_counter() - t0 > timeout_s:
                    status = "timeout"
                    proc.send_signal(signal.SIGKILL)
                time.sleep(0.02)
            proc.wait()
            seconds = time.perf_counter() - t0
        stdout = out_path.read_text(errors="replace")
        stderr_tail = err_path.read_text(errors="replace").splitlines()[-15:]
    rec = Isolated(status or "ok", max_rss=max_rss, seconds=seconds, stderr_tail=stderr_tail)
    if status == "over budget":
        rec.message = f"stopped at the {budget_bytes / GB:.1f} GB memory budget (needs more)"
    elif status == "timeout":
        rec.message = f"stopped after the {timeout_s:.0f} s time limit"
    elif proc.returncode < 0:
        rec.status = "killed"
        rec.message = (
            f"killed by signal {-proc.returncode}"
            + (" (out of memory?)" if proc.returncode == -signal.SIGKILL else "")
            + f" at {max_rss / GB:.1f} GB resident"
        )
    else:
        lines = [ln for ln in stdout.splitlines() if ln.startswith(MARK)]
        if proc.returncode == 0 and lines:
            rec.result = json.loads(lines[-1][len(MARK) :])
            if "error" in rec.result:
                rec.status, rec.message = "error", str(rec.result["error"])
        else:
            rec.status = "error"
            last = next((ln for ln in reversed(stderr_tail) if ln.strip()), "")
            rec.message = f"exit code {proc.returncode}: {last}"
    return rec


def _child(script: str, function: str) -> None:
    import importlib.util

    config = json.loads(sys.stdin.read())
    sys.path.insert(0, str(Path(script).resolve().parent))
    spec = importlib.util.spec_from_file_location("_bench_child", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    meter = Meter(config.get("device", "cpu"))
    try:
        result = getattr(module, function)(config, meter)
    except MemoryError as e:  # a GPU's XLA out-of-memory arrives as an exception, not a kill
        result = {"error": f"out of memory: {e}"}
    except Exception as e:  # noqa: BLE001 - reported to the parent, which writes it in the table
        text = str(e).splitlines()[0] if str(e) else ""
        oom = "RESOURCE_EXHAUSTED" in str(e) or "Out of memory" in str(e)
        result = {"error": ("out of memory: " if oom else f"{type(e).__name__}: ") + text[:300]}
    result["marks"] = meter.marks
    print(MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python benchmarks/_mem.py --child SCRIPT FUNCTION (config JSON on stdin)")
