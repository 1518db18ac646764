"""cfcore's optimizers: pinned update rules that every backend implements identically.

Example:
    >>> import cfcore
    >>> opt = cfcore.optimizers.Adagrad(learning_rate=8.0)
    >>> opt.initial_accumulator_value
    0.1
"""

from .specs import SGD as SGD
from .specs import Adagrad as Adagrad
from .specs import Adam as Adam
from .specs import OptimizerSpec as OptimizerSpec
from .specs import make_optimizer as make_optimizer

__all__ = ["SGD", "Adagrad", "Adam", "OptimizerSpec", "make_optimizer"]
