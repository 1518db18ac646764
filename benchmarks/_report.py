"""Writing benchmark results: markdown tables and PNG figures, atomically, into an output folder.

Every figure carries the machine/version stamp in its footer, and every markdown file repeats it
under its tables, so a number is never read without where and when it was measured.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from _common import RESULTS, stamp

from cfcore.io.atomic import atomic_write


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Options every script of this issue shares: where to write, and the smaller modes."""
    p.add_argument(
        "--out-dir",
        type=Path,
        default=RESULTS,
        help=f"folder for the markdown and PNG results (default {RESULTS})",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: a few minutes in all")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: proves the script runs (CI)")


def write_text(out_dir: Path, name: str, text: str) -> Path:
    return atomic_write(Path(out_dir) / name, lambda p: p.write_text(text))


def write_json(out_dir: Path, name: str, data: Any) -> Path:
    """The raw numbers behind a table, with the stamp, for whoever wants to re-plot them."""
    payload = {"stamp": stamp(), "data": data}
    return write_text(out_dir, name, json.dumps(payload, indent=1, default=str) + "\n")


def read_saved(out_dir: Path, name: str) -> tuple[Any, str]:
    """The data of `<name>.json` and the footer its figure had, for re-plotting without re-running.

    The footer is the stamp line of `<name>.md` (the stamp plus the run's device and budget) when
    that file exists, else the JSON's stamp: the figure keeps the date and machine of the
    measurement, not of the re-plot.
    """
    path = Path(out_dir) / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"--replot: {path} does not exist; run the benchmark first")
    saved = json.loads(path.read_text())
    footer = saved["stamp"]
    md = path.with_suffix(".md")
    if md.is_file():
        lines = [ln for ln in md.read_text().splitlines() if ln.startswith("Measured ")]
        if lines:
            footer = lines[-1]
    return saved["data"], footer


def add_replot_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--replot",
        action="store_true",
        help="redraw the PNG from the saved JSON in --out-dir (no measuring; the tables stay)",
    )


def color(label: str) -> str:
    """The colour of the backend (or contender) a label names: cfcore.viz's one palette."""
    from cfcore.viz import backend_color

    return backend_color(label)


def save_figure(fig: Any, out_dir: Path, name: str, footer: str | None = None) -> Path:
    """Saves a matplotlib figure as PNG with the stamp (date, machine, versions) in its footer."""
    text = footer if footer is not None else stamp()
    fig.text(0.01, 0.005, _wrap(text, 170), fontsize=7, color="0.35", ha="left", va="bottom")
    path = atomic_write(
        Path(out_dir) / name, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight")
    )
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join([*lines, line])


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return ""
    if b >= 1024**4:
        return f"{b / 1024**4:.2f} TiB"
    if b >= 1024**3:
        return f"{b / 1024**3:.2f} GiB"
    return f"{b / 1024**2:.0f} MiB"


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def cpu_env(device: str) -> dict[str, str]:
    """Environment for a child process: which accelerator JAX and TensorFlow may use."""
    if device == "gpu":
        return {"JAX_PLATFORMS": "cuda", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    return {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}


def available_bytes() -> int:
    """Memory available for new work now (Linux's MemAvailable; psutil elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.virtual_memory().available)


def default_budget_gb() -> float:
    """60% of the memory available now: leaves room for whatever else the machine runs."""
    return round(0.6 * available_bytes() / 1024**3, 1)
