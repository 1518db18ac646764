"""What `cfcore.tune` returns: the table of settings, the best one, and its files."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ArgumentValueError, MissingFileError, NumericalError
from ..io.atomic import atomic_write
from .space import Point

BEST_FORMAT = "cfcore-tune-best/1"
"""The `format` field of a best-setting JSON (`TuneResult.save_best`)."""
RUN_COLUMNS = ("steps", "best_step", "seconds", "status")
"""The table's columns after the hyper-parameters and the metric."""


@dataclass(frozen=True)
class TuneResult:
    """The outcome of `cfcore.tune`.

    Attributes:
        table: one row per setting tried, in the order they ran: the hyper-parameters, the
            metric (its best value over the point's evaluations), `steps` (steps or sweeps run),
            `best_step` (where the metric was best), `seconds`, `status` ("ok",
            "stopped early" or "diverged").
        model: the model's `cfcore train --model` name.
        metric: the metric's name (a column of `table`).
        higher_is_better: the metric's direction.
        hyper_parameters: the searched names (columns of `table`).
        fixed: the settings every point shared that a re-run needs (the optimizer and its
            learning rate of a gradient-trained model, when not searched).
        search: "grid", "random" or "tpe".
        seed: the seed of the split, the search and the fits.
        validation: what the validation split was.
    """

    table: pd.DataFrame
    model: str
    metric: str
    higher_is_better: bool
    hyper_parameters: tuple[str, ...]
    fixed: dict[str, Any]
    search: str
    seed: int
    validation: str

    def _best_row(self) -> pd.Series:
        values = self.table[self.metric].to_numpy(dtype=np.float64)
        finite = np.isfinite(values)
        if not finite.any():
            raise NumericalError(
                f"no setting of the {len(values)} tried reached a finite {self.metric}"
            )
        scores = np.where(finite, values, -np.inf if self.higher_is_better else np.inf)
        # The first of equal scores: the earliest point that reached it.
        return self.table.iloc[
            int(np.argmax(scores) if self.higher_is_better else np.argmin(scores))
        ]

    @property
    def best(self) -> Point:
        """The best setting's hyper-parameters (plain Python values)."""
        row = self._best_row()
        return {name: _plain(row[name]) for name in self.hyper_parameters}

    @property
    def best_metric(self) -> float:
        """The best setting's metric."""
        return float(self._best_row()[self.metric])

    @property
    def best_steps(self) -> int:
        """The steps (or sweeps) at which the best setting's metric was reached."""
        return int(self._best_row()["best_step"])

    def best_settings(self) -> dict[str, Any]:
        """What `cfcore train --config` reads: the best hyper-parameters, the shared settings
        (`fixed`) and `steps`."""
        return {**self.fixed, **self.best, "steps": self.best_steps}

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Writes `table` as CSV (atomically); `pandas.read_csv` reads it back."""
        return atomic_write(Path(path), lambda p: self.table.to_csv(p, index=False))

    def save_best(self, path: str | os.PathLike[str]) -> Path:
        """Writes the best setting as JSON (atomically): `model`, `settings` (see
        `best_settings`), `metric`, `value`, and how it was found; `read_best` reads it, and
        `cfcore train --config PATH` trains it."""
        doc = {
            "format": BEST_FORMAT,
            "model": self.model,
            "settings": self.best_settings(),
            "metric": self.metric,
            "value": self.best_metric,
            "search": self.search,
            "seed": self.seed,
            "validation": self.validation,
            "points": len(self.table),
        }
        text = json.dumps(doc, indent=2) + "\n"
        return atomic_write(Path(path), lambda p: p.write_text(text, encoding="utf-8"))

    def report(self, path: str | os.PathLike[str]) -> Path:
        """Writes an offline HTML page: the metric against each hyper-parameter, and against
        the order the points ran in (`cfcore.viz.tuning_chart`)."""
        from ..viz import save_report, tuning_chart

        best = ", ".join(f"{k}={v!r}" for k, v in self.best.items()) or "the defaults"
        intro = (
            f"{len(self.table)} settings of {self.model} by {self.search} search (seed "
            f"{self.seed}); validation: {self.validation}. Best {self.metric} "
            f"{self.best_metric:.4f} with {best} at step {self.best_steps}."
        )
        chart = tuning_chart(self.table, self.hyper_parameters, self.metric)
        return save_report(
            [(f"{self.metric} against each hyper-parameter", chart)],
            path,
            title=f"cfcore tune: {self.model}",
            intro=intro,
        )


def _plain(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    return value


def read_json(path: Path, what: str) -> Any:
    """The JSON document in `path` (`what` names it in the errors).

    Raises:
        MissingFileError: no such file.
        ArgumentValueError: the file holds no JSON.
    """
    if not path.is_file():
        raise MissingFileError(f"no such {what}: {str(path)!r}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArgumentValueError(f"the {what} {path} is not JSON: {err}") from None


def read_best(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A best setting written by `TuneResult.save_best`: `{"model": name, "settings": {...}}`
    and the other fields.

    Raises:
        MissingFileError: no such file.
        ArgumentValueError: the file is not such a JSON (naming what is wrong).
    """
    path = Path(path)
    doc = read_json(path, "config file")
    if not isinstance(doc, dict) or not isinstance(doc.get("settings"), dict):
        raise ArgumentValueError(
            f"{path} holds no 'settings' object: expected the best.json that cfcore tune writes"
        )
    if not isinstance(doc.get("model"), str):
        raise ArgumentValueError(f"{path}: 'model' must be a model name, got {doc.get('model')!r}")
    for key, value in doc["settings"].items():
        if not isinstance(value, bool | int | float | str) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise ArgumentValueError(f"{path}: setting {key!r} has no usable value: {value!r}")
    return doc
