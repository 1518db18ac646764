"""The `cfcore` command line: one Typer app; each group of commands lives in its own module.

`train` (train.py), `recommend`, `neighbors` and `rate` (retrieval.py), `explore` and `plot`
(viz.py), `compare` (compare.py); what they share is in _common.py. The console script is `cfcore.cli:main`.
"""

from __future__ import annotations

import typer

from .compare import register as _register_compare
from .retrieval import register as _register_retrieval
from .train import register as _register_train
from .viz import register as _register_viz

app = typer.Typer(
    help="Collaborative-filtering embeddings on TensorFlow or JAX.", no_args_is_help=True
)


@app.callback()
def _main() -> None:
    """cfcore: train and inspect collaborative-filtering embeddings."""


_register_train(app)
_register_retrieval(app)
_register_viz(app)
_register_compare(app)


def main() -> None:
    app()
