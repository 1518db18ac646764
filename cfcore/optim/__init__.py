"""Optimizers: cfcore's pinned specs and their update rules, written once for every backend."""

from ..specs import SGD as SGD
from ..specs import Adagrad as Adagrad
from ..specs import Adam as Adam
from ..specs import OptimizerSpec as OptimizerSpec
from ..specs import make_optimizer as make_optimizer
from .rules import Rule as Rule
from .rules import make_rule as make_rule
