# ruff: noqa: E402  (the console script guards its start-up before anything else is imported)
"""cfcore: collaborative-filtering embeddings on TensorFlow or JAX, with one NumPy reference.

`import cfcore` imports neither framework: the backend is imported when first used.
"""

from ._startup import guard_startup as _guard_startup

_guard_startup()  # the console script only: see `cfcore._startup`

from . import datasets as datasets
from . import optimizers as optimizers
from . import reference as reference
from .backend.compilation_cache import enable_compilation_cache as enable_compilation_cache
from .backend.protocol import Backend as Backend
from .backend.registry import BackendError as BackendError
from .backend.registry import available_backends as available_backends
from .backend.registry import get_backend as get_backend
from .backend.registry import register_backend as register_backend
from .backend.registry import set_default_backend as set_default_backend
from .data import DatasetError as DatasetError
from .data import Ratings as Ratings
from .data import RatingsError as RatingsError
from .data.ratings import Batch as Batch
from .errors import ArgumentTypeError as ArgumentTypeError
from .errors import ArgumentValueError as ArgumentValueError
from .errors import CfcoreError as CfcoreError
from .errors import FileAccessError as FileAccessError
from .errors import MissingDependencyError as MissingDependencyError
from .errors import MissingFileError as MissingFileError
from .errors import NotFittedError as NotFittedError
from .errors import NotSupportedError as NotSupportedError
from .errors import NumericalError as NumericalError
from .errors import ResourceLimitError as ResourceLimitError
from .maths import functional as _functional  # noqa: F401  (registers bound-backend helpers)
from .models import MatrixFactorization as MatrixFactorization
from .models import RegularizedMF as RegularizedMF
from .specs import MFSpec as MFSpec
from .train import TrainingDivergedError as TrainingDivergedError

__version__ = "0.1.0"
from . import exploration as exploration  # noqa: E402  (tables of section I; pandas only)
from . import metrics as metrics  # noqa: E402
from . import retrieval as retrieval  # noqa: E402
from . import viz as viz  # noqa: E402  (pictures; matplotlib/altair/sklearn imported on use)
from .data.synthetic import MOVIELENS_SHAPES as MOVIELENS_SHAPES  # noqa: E402
from .data.synthetic import synthetic_ratings as synthetic_ratings  # noqa: E402
from .data.user_ratings import UserRatingsError as UserRatingsError  # noqa: E402
from .models import IALS as IALS  # noqa: E402
from .models import WALS as WALS  # noqa: E402
from .models import BiasedMF as BiasedMF  # noqa: E402
from .models import SoftmaxModel as SoftmaxModel  # noqa: E402
from .models.bpr import BPR as BPR  # noqa: E402
from .models.many import ManyFit as ManyFit  # noqa: E402
from .models.many import fit_many as fit_many  # noqa: E402
from .persistence import ModelFileError as ModelFileError  # noqa: E402
from .persistence import load as load  # noqa: E402
from .tuning import TuneResult as TuneResult  # noqa: E402
from .tuning import tune as tune  # noqa: E402  (optuna imported only by a TPE search)
