"""Hyper-parameter search on a validation split of the training data: `cfcore.tune`.

`cfcore.tune(model, space, train, ...)` searches; the space's vocabulary is reached from it too
(`cfcore.tune.loguniform`, `uniform`, `choice`, `intrange`, `EarlyStopping`), or imported from
here. Optuna (TPE search) is imported only when `search="tpe"` runs.

Example:
    >>> import cfcore
    >>> space = {"regularization_coeff": cfcore.tune.loguniform(1e-3, 1.0)}
    >>> space["regularization_coeff"]
    LogUniform(low=0.001, high=1.0)
"""

from __future__ import annotations

from .experiment import Experiment as Experiment
from .experiment import ExperimentResult as ExperimentResult
from .experiment import load_experiment as load_experiment
from .experiment import run_experiment as run_experiment
from .result import TuneResult as TuneResult
from .result import read_best as read_best
from .runner import EarlyStopping as EarlyStopping
from .search import SearchPlan as SearchPlan
from .search import plan_search as plan_search
from .search import tune as run_tune
from .space import Choice as Choice
from .space import Distribution as Distribution
from .space import IntRange as IntRange
from .space import LogUniform as LogUniform
from .space import Uniform as Uniform
from .space import choice as choice
from .space import intrange as intrange
from .space import loguniform as loguniform
from .space import uniform as uniform

__all__ = [
    "Choice",
    "Distribution",
    "EarlyStopping",
    "Experiment",
    "ExperimentResult",
    "IntRange",
    "LogUniform",
    "TuneResult",
    "Uniform",
    "choice",
    "intrange",
    "loguniform",
    "load_experiment",
    "run_experiment",
    "SearchPlan",
    "plan_search",
    "read_best",
    "run_tune",
    "tune",
    "uniform",
]


class Tune:
    """`cfcore.tune`: call it to search (`run_tune`'s arguments); its attributes are the search
    space's vocabulary, so that `cfcore.tune.loguniform(1e-3, 1)` needs no other import."""

    __call__ = staticmethod(run_tune)
    choice = staticmethod(choice)
    uniform = staticmethod(uniform)
    loguniform = staticmethod(loguniform)
    intrange = staticmethod(intrange)
    EarlyStopping = EarlyStopping
    TuneResult = TuneResult
    read_best = staticmethod(read_best)

    def __repr__(self) -> str:
        return "<cfcore.tune: hyper-parameter search (help(cfcore.tune))>"


tune = Tune()
"""The search (see `run_tune`), with the space's vocabulary as attributes."""
