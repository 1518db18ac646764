"""Models: each one's objective written once (`losses`) on the backend's operations."""

from .als import IALS as IALS
from .als import WALS as WALS
from .biased import BiasedMF as BiasedMF
from .mf import MatrixFactorization as MatrixFactorization
from .mf import RegularizedMF as RegularizedMF
from .softmax import SoftmaxModel as SoftmaxModel
