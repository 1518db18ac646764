"""`cfcore experiment`: contenders × datasets × seeds from a TOML config, each tuned, refitted and
tested once (`cfcore.tuning.experiment`).

The whole config (every contender's space, each adapter imported) is checked before any data is
read; results.md, results.json and report.html are written into --out, each atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import console, fail
from ._signals import deferred, kept, output, stage
from .train import _ERRORS


def register(app: typer.Typer) -> None:
    """Adds the `experiment` command to `app`."""
    app.command(name="experiment")(experiment)


def experiment(
    config: Annotated[Path, typer.Argument(help="The experiment's TOML config.")],
    out: Annotated[
        Path, typer.Option(help="Folder for results.md, results.json and report.html.")
    ] = Path("runs/experiment"),
) -> None:
    """Tune, refit and test contenders over datasets and seeds; report mean ± 95% intervals.

    Each contender of CONFIG is tuned by cfcore tune's search on a validation split carved from
    each seed's training part, refitted on the training part with its best setting and scored on
    the test part once. Writes results.md, results.json and report.html (error bars) into --out.
    """
    from cfcore.io.atomic import check_output_path
    from cfcore.tuning.experiment import FILES, load_experiment, run_experiment

    try:
        exp = load_experiment(config)
        for name in FILES:
            check_output_path(out / name)
    except _ERRORS as err:
        raise fail(err) from err
    output(out)
    seeds = ", ".join(label for label, _ in exp.seeds)
    console.print(
        f"[bold]{exp.name}[/]: {len(exp.contenders)} contenders × {len(exp.datasets)} datasets "
        f"× {'folds' if exp.folds else 'seeds'} {seeds}",
        highlight=False,
    )
    try:
        # A cfcore contender's runs are deferred (a signal waits for the next safe point
        # between compiled chunks); a peer's end at once.
        result = run_experiment(exp, on_run=_print_run, on_start=_stage, guard=deferred)
    except _ERRORS as err:
        raise fail(err, highlight=True) from err
    stage("while writing the experiment's files")
    kept(f"the experiment's files in {out} may be incomplete")
    try:
        with deferred():
            written = result.save(out)
    except _ERRORS as err:
        raise fail(err) from err
    kept(f"the experiment's files are in {out}")
    console.print(result.markdown().split("## Chosen settings")[0], highlight=False, soft_wrap=True)
    console.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)


def _stage(dataset: str, seed: str, contender: str) -> None:
    stage(f"while running {contender} on {dataset}, seed {seed}")


def _print_run(row: dict[str, Any]) -> None:
    metrics = ", ".join(
        f"{k} {v:.4f}" for k, v in row.items()
        if k not in ("dataset", "seed", "contender", "best", "seconds", "validation")
    )  # fmt: skip
    console.print(
        f"  {row['dataset']} {row['seed']} {row['contender']}: {metrics} (best {row['best']}, "
        f"{row['seconds']:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )
