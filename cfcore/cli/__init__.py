"""The `cfcore` command line: one Typer app; each group of commands lives in its own module.

`train` (train.py), `recommend`, `neighbors` and `rate` (retrieval.py), `explore` and `plot`
(viz.py), `compare` (compare.py), `tune` (tune.py), `experiment` (experiment.py); what they share is in _common.py. The console script is
`cfcore.cli:main`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ._quiet import configure as _configure_logging
from ._signals import run as _run_handled
from .compare import register as _register_compare
from .experiment import register as _register_experiment
from .retrieval import register as _register_retrieval
from .train import register as _register_train
from .tune import register as _register_tune
from .viz import register as _register_viz

app = typer.Typer(
    help="Collaborative-filtering embeddings on TensorFlow or JAX.", no_args_is_help=True
)


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Let the frameworks' start-up log lines (TensorFlow/absl, oneDNN, CUDA, JAX) "
            "through to stderr; without it they are silenced. Put it before the command: "
            "cfcore -v train ...",
        ),
    ] = False,
) -> None:
    """cfcore: train and inspect collaborative-filtering embeddings."""
    # Before any command runs, so before any framework is imported; undone when it ends.
    ctx.call_on_close(_configure_logging(verbose))


_register_train(app)
_register_retrieval(app)
_register_viz(app)
_register_compare(app)
_register_tune(app)
_register_experiment(app)


def main() -> None:
    """The `cfcore` console script: the app, ended cleanly by SIGINT or SIGTERM (`_signals`)."""
    _run_handled(app)
