"""`cfcore compare`: the same model, from the same initial values, on every backend; one table.

It trains the spec on each backend with `cfcore.eval.agreement.train_on_backends` (what the
cross-backend conformance tests run), holds the largest differences against the tolerances those
tests enforce (`agreement.TOLERANCES`), and prints the final metrics, the differences, compile
time, time per step and peak memory. `--out` writes the same as markdown and JSON.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..data.bounded import read_csv as bounded_csv
from ..errors import ArgumentValueError, MissingFileError
from ._common import DataDirOpt, DatasetOpt, OptimizerKind, console, fail
from ._signals import kept, output, stage
from .train import (
    MODELS,
    ModelKind,
    _build_factor,
    _check_numbers,
    _defaults_help,
    _line,
    _load_split,
    _MFSettings,
)

# The models compare trains: gradient steps on explicit ratings, from the same start.
COMPARED = [
    name
    for name, cls in MODELS.items()
    if cls.command_line is not None
    and (cls.command_line.data, cls.command_line.trains_by) == ("ratings", "steps")
]

_ERRORS = (ValueError, OSError, FloatingPointError, TypeError, ImportError)

# The documented agreement run (docs/command-line.md, CrossBackendConformance): 500 steps, a row every 50.
STEPS = 500
EVAL_EVERY = 50


def register(app: typer.Typer) -> None:
    """Adds the `compare` command to `app`."""
    app.command(
        name="compare",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
    )(compare)


def compare(
    ctx: typer.Context,
    backends: Annotated[
        list[str] | None,
        typer.Option(
            help="Backends to compare: --backends jax tf torch, or jax,tf (default: every "
            "installed backend that trains)."
        ),
    ] = None,
    model: Annotated[
        ModelKind,  # pyright: ignore[reportInvalidTypeForm]  (built from the model classes)
        typer.Option(help=f"One of {', '.join(COMPARED)} (gradient steps on ratings)."),
    ] = "regularized",
    dataset: DatasetOpt = "100k",
    data_dir: DataDirOpt = None,
    ratings: Annotated[
        Path | None,
        typer.Option(
            help="A ratings CSV with user, item and rating columns (user_id/userId, "
            "item_id/movieId), instead of --dataset."
        ),
    ] = None,
    holdout: Annotated[float, typer.Option(help="Fraction of ratings held out for testing.")] = 0.1,
    seed: Annotated[
        int, typer.Option(help="Seed of the split, the initial values, the batches.")
    ] = 0,
    dim: Annotated[
        int | None, typer.Option(help=f"Embedding dimension {_defaults_help('--dim', COMPARED)}.")
    ] = None,
    steps: Annotated[
        int, typer.Option(help="Optimizer steps (500: the run the documented tolerances are for).")
    ] = STEPS,
    learning_rate: Annotated[
        float | None,
        typer.Option("--lr", "--learning-rate", help="Learning rate \\[mf: 10, regularized: 20]."),
    ] = None,
    optimizer: Annotated[OptimizerKind, typer.Option(help="Optimizer.")] = OptimizerKind.sgd,
    init_stddev: Annotated[
        float | None,
        typer.Option(help="Std. dev. of the initial embeddings \\[mf: 0.5, reg.: 0.05]."),
    ] = None,
    regularization: Annotated[float, typer.Option(help="λr (regularized model).")] = 0.1,
    gravity: Annotated[float, typer.Option(help="λg (regularized model).")] = 1.0,
    batch_size: Annotated[
        int | None, typer.Option(help="Ratings per step; default full batch.")
    ] = None,
    eval_every: Annotated[int, typer.Option(help="Steps between two history rows.")] = EVAL_EVERY,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for compare.md and compare.json (written atomically)."),
    ] = None,
) -> None:
    """Train one model spec on several backends from the same start and show that they agree.

    Prints final train and test errors per backend, the largest difference between any two
    backends (errors, the test error at every history row, each embedding table) against the
    tolerances the test suite enforces, compile time, time per step and peak memory. Exits with
    code 1 when a difference is beyond its tolerance.
    """
    import cfcore
    from cfcore.eval import agreement

    try:
        names = _backend_names(backends, ctx.args)
        if model not in COMPARED:
            raise ArgumentValueError(
                f"--model {model} is not supported by compare: use {' or '.join(COMPARED)}"
            )
        line = _line(model)
        _check_numbers(
            backend=None, dim=dim, steps=steps, eval_every=eval_every, batch_size=batch_size,
            seed=seed, k=1, holdout=holdout, fold=None, mse="gather", threshold=0.0,
            numbers={"--lr": learning_rate, "--init-stddev": init_stddev,
                     "--regularization": regularization, "--gravity": gravity},
        )  # fmt: skip
        if out is not None:
            from cfcore.io.atomic import check_output_path

            check_output_path(out / "compare.json")
        settings = _MFSettings.resolve(
            line,
            dim=dim,
            steps=steps,
            learning_rate=learning_rate,
            init_stddev=init_stddev,
            optimizer=optimizer,
            eval_every=eval_every,
        )
        name, train_r, test_r = _data(dataset, data_dir, ratings, holdout, seed)
        opt = cfcore.optimizers.make_optimizer(settings.optimizer.value, settings.learning_rate)
        values = {"--regularization": regularization, "--gravity": gravity, "--mse": "gather"}
        spec_model = _build_factor(line, settings, values)
        loaded = []
        for b in names:
            be = cfcore.get_backend(b)
            agreement.strict_float32(be)
            loaded.append(be)
        console.print(
            f"[bold]{spec_model!r}[/] on {name} ({len(train_r)} train / {len(test_r)} test "
            f"ratings), {opt}, {settings.steps} steps, seed {seed}; backends " + ", ".join(names),
            highlight=False,
        )
        stage("during training on " + ", ".join(names))
        with console.status("training on " + ", ".join(names) + " ..."):
            runs = agreement.train_on_backends(
                lambda: _build_factor(line, settings, values),
                loaded,
                train_r,
                test_r,
                steps=settings.steps,
                optimizer=opt,
                seed=seed,
                batch_size=batch_size,
                eval_every=settings.eval_every,
                timed=True,
            )
        diffs = agreement.largest_differences(runs)
        result = _result(
            spec_model, name, train_r, test_r, opt, settings, seed, batch_size, runs, diffs
        )
        console.print(_table(result))
        if out is not None:
            output(out)
            stage(f"while writing {out}")
            _write(out, result)
            kept(f"the comparison is in {out}")
    except _ERRORS as err:
        raise fail(err) from err
    bad = [d for d in diffs if not d.ok]
    if bad:
        raise fail(
            "backends disagree beyond the tolerances: "
            + "; ".join(
                f"{d.quantity} differs by {d.value:.3g} between {d.pair[0]} and {d.pair[1]} "
                f"(tolerance {d.tolerance:g})"
                for d in bad
            )
        )
    console.print(
        f"[green]the {len(runs)} backends agree within the tolerances[/]", highlight=False
    )


# ---------------------------------------------------------------------------- steps


def _backend_names(given: list[str] | None, extra: list[str]) -> list[str]:
    """The backends asked for (`--backends jax tf torch`, `jax,tf` or repeated), else all."""
    import cfcore

    if extra and not given:
        raise ArgumentValueError(
            f"unexpected argument(s) {extra}: name backends with --backends jax tf"
        )
    trainable = [b for b in cfcore.available_backends() if b != "numpy"]
    if not given:
        names = trainable
    else:
        names = [n.strip() for g in [*given, *extra] for n in g.split(",") if n.strip()]
        names = ["tf" if n == "tensorflow" else "torch" if n == "pytorch" else n for n in names]
        for n in names:
            if n == "numpy":
                raise ArgumentValueError(
                    "numpy is the float64 reference backend: it has no autodiff and cannot train; "
                    f"choose among {trainable}"
                )
            if n not in cfcore.available_backends():
                raise ArgumentValueError(
                    f"backend {n!r} is not installed (installed and able to train: {trainable})"
                )
        if len(set(names)) != len(names):
            raise ArgumentValueError(f"backend named twice in {names}")
    if len(names) < 2:
        raise ArgumentValueError(
            f"comparing needs at least two backends, got {names} (installed and able to train: "
            f"{trainable}; pip install 'cfcore[all]' for jax, tf and torch)"
        )
    return names


def _read_ratings_file(path: Path) -> Any:
    import pandas as pd

    from cfcore.data.ratings import Ratings

    if not path.is_file():
        raise MissingFileError(f"ratings file {path} does not exist")
    try:
        df = bounded_csv(path, ArgumentValueError)
    except (ValueError, pd.errors.ParserError) as err:
        raise ArgumentValueError(f"{path} is not a ratings CSV ({err})") from err
    cols = {}
    for role, names in (
        ("user", ("user_id", "user", "userId")),
        ("item", ("item_id", "item", "movieId", "movie_id")),
        ("rating", ("rating", "value")),
    ):
        found = [c for c in names if c in df.columns]
        if not found:
            raise ArgumentValueError(
                f"{path} has no {role} column (it has {list(df.columns)}); expected one of "
                f"{list(names)}"
            )
        cols[role] = found[0]
    return Ratings.from_frame(df, cols["user"], cols["item"], cols["rating"])


def _data(dataset: str, data_dir: Path | None, ratings: Path | None, holdout: float, seed: int):
    """`(name, train, test)`: a seeded split of the ratings file, else of the named dataset."""
    if ratings is not None:
        r = _read_ratings_file(ratings)
        train_r, test_r = r.split(holdout_fraction=holdout, seed=seed)
        return ratings.name, train_r, test_r
    ds, train_r, test_r = _load_split(dataset, data_dir, None, holdout, seed)
    return ds.name, train_r, test_r


def _versions(names: list[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    pkgs = {"jax": ["jax", "jaxlib"], "tf": ["tensorflow"], "torch": ["torch"]}
    out = {}
    for p in ["cfcore", "numpy", *(q for n in names for q in pkgs.get(n, []))]:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    return out


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _result(m, name, train_r, test_r, opt, settings, seed, batch_size, runs, diffs) -> dict:
    """Everything the table shows, as plain JSON-ready values."""
    names = [r.backend for r in runs]
    return {
        "model": repr(m),
        "data": {"name": name, "train_ratings": len(train_r), "test_ratings": len(test_r)},
        "optimizer": str(opt),
        "steps": settings.steps,
        "eval_every": settings.eval_every,
        "batch_size": batch_size,
        "seed": seed,
        "machine": {
            "cpu": _cpu(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "versions": _versions(names),
        },
        "backends": {
            r.backend: {
                "train": {k: float(v) for k, v in r.train.items()},
                "test": {k: float(v) for k, v in r.test.items()} if r.test else None,
                "compile_s": r.compile_s,
                "step_s": r.step_s,
                "peak_rss_bytes": r.peak_rss_bytes,
                "rss_growth_bytes": r.rss_growth_bytes,
            }
            for r in runs
        },
        "differences": [
            {
                "quantity": d.quantity,
                "value": d.value,
                "between": list(d.pair),
                "tolerance": d.tolerance,
                "ok": d.ok,
            }
            for d in diffs
        ],
        "agree": all(d.ok for d in diffs),
    }


_LABELS = {
    "train_mse": "train MSE (final)",
    "test_mse": "test MSE (final)",
    "test_mse_history": "test MSE, every history row",
}


def _rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """The table as header and rows of text: the quantities down, the backends across."""
    names = list(result["backends"])
    b = result["backends"]
    diffs = {d["quantity"]: d for d in result["differences"]}
    header = ["quantity", *names, "largest difference", "tolerance", "agrees"]

    def mib(x):
        return "n/a" if x is None else f"{x / 2**20:.0f}"

    def diff_cells(q):
        d = diffs.get(q)
        if d is None:
            return ["", "", ""]
        return [
            f"{d['value']:.2e} ({d['between'][0]}–{d['between'][1]})",
            f"{d['tolerance']:g}",
            "pass" if d["ok"] else "FAIL",
        ]

    rows = [
        [
            "train MSE (final)",
            *(f"{b[n]['train']['mse']:.6f}" for n in names),
            *diff_cells("train_mse"),
        ],
        [
            "test MSE (final)",
            *(f"{b[n]['test']['mse']:.6f}" for n in names),
            *diff_cells("test_mse"),
        ],
        ["test MSE, every history row", *([""] * len(names)), *diff_cells("test_mse_history")],
    ]
    for q in diffs:
        if q.startswith("embeddings:"):
            rows.append([f"{q.split(':', 1)[1]} embeddings", *([""] * len(names)), *diff_cells(q)])
    rows += [
        ["test RMSE (final)", *(f"{b[n]['test']['rmse']:.4f}" for n in names), "", "", ""],
        ["compile (s)", *(f"{b[n]['compile_s']:.2f}" for n in names), "", "", ""],
        ["time per step (ms)", *(f"{b[n]['step_s'] * 1e3:.2f}" for n in names), "", "", ""],
        ["peak memory (MiB)", *(mib(b[n]["peak_rss_bytes"]) for n in names), "", "", ""],
        ["  growth during the run", *(mib(b[n]["rss_growth_bytes"]) for n in names), "", "", ""],
    ]
    return header, rows


def _title(result: dict) -> str:
    d = result["data"]
    return (
        f"{result['model']} on {d['name']}, {result['optimizer']}, {result['steps']} steps, "
        f"seed {result['seed']}"
    )


def _table(result: dict) -> Table:
    header, rows = _rows(result)
    table = Table()  # the run is described on the line above it
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for i, row in enumerate(rows):
        style = None
        if row[-1] == "FAIL":
            style = "red"
        table.add_row(*row, style=style, end_section=i == len(rows) - 6)
    return table


def _markdown(result: dict) -> str:
    header, rows = _rows(result)
    m = result["machine"]
    lines = [
        "# cfcore compare\n",
        _title(result) + f" ({result['data']['train_ratings']} train / "
        f"{result['data']['test_ratings']} test ratings).\n",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(c.strip() for c in r) + " |" for r in rows),
        "",
        (
            "All backends agree within the tolerances."
            if result["agree"]
            else "**The backends disagree beyond the tolerances.**"
        ),
        "",
        f"Measured on {m['cpu']} ({m['cores']} cores visible), Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + ". Compile time is that of the first chunk of steps less its steps; time per step "
        "includes the evaluations between chunks; peak memory is the process's resident size, "
        "sampled every 5 ms during each backend's run (the frameworks of earlier backends stay "
        "loaded).",
        "",
    ]
    return "\n".join(lines)


def _write(out: Path, result: dict) -> None:
    from cfcore.io.atomic import atomic_write

    md = _markdown(result)
    text = json.dumps(result, indent=1) + "\n"
    atomic_write(out / "compare.md", lambda p: p.write_text(md, encoding="utf-8"))
    atomic_write(out / "compare.json", lambda p: p.write_text(text, encoding="utf-8"))
    console.print(f"wrote {out / 'compare.md'} and {out / 'compare.json'}", highlight=False)
