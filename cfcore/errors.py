"""cfcore's errors: one base class, `CfcoreError`, under every error cfcore raises on purpose.

Each specific error also keeps the built-in base it always had (`ValueError`, `OSError`,
`FloatingPointError`, ...), so code written as `except ValueError` keeps working, while
`except cfcore.CfcoreError` catches every refusal of cfcore's and nothing else.

This module imports nothing from cfcore, so any module may import it.
"""

from __future__ import annotations


class CfcoreError(Exception):
    """Base class of the errors cfcore raises on purpose (bad input, damaged files, divergence)."""


class ArgumentTypeError(CfcoreError, TypeError, ValueError):
    """An argument of the wrong type (a string where a number belongs, a bool for an int, ...).

    A `TypeError`, and also a `ValueError` so that code catching the `ValueError`s that cfcore
    raised for wrong types before this class existed keeps working.
    """


class ArgumentValueError(CfcoreError, ValueError):
    """An argument of the right type with a value outside what is allowed."""


class ResourceLimitError(CfcoreError, MemoryError):
    """An allocation refused before it was attempted: the estimate exceeds the memory available.

    Attributes:
        nbytes: the estimated size in bytes.
        available: the bytes the estimate was compared with.
    """

    def __init__(self, message: str, nbytes: int = 0, available: int = 0) -> None:
        super().__init__(message)
        self.nbytes = nbytes
        self.available = available


class FileAccessError(CfcoreError, OSError):
    """A path cannot be read or written: permission denied, empty, a NUL byte, under a file, a
    folder where a file belongs, no such folder.

    Distinct from a file that can be read but holds the wrong content (`ModelFileError`,
    `DatasetError`).
    """


class MissingFileError(FileAccessError, FileNotFoundError):
    """A file cfcore was asked to read does not exist (the message names it); still a
    `FileNotFoundError` for code that catches that."""


class NotSupportedError(CfcoreError, NotImplementedError):
    """A well-formed request that cfcore does not support: a feature the chosen backend lacks
    (sharding on PyTorch, automatic differentiation on the NumPy reference) or a combination of
    options not implemented. The message names what is supported instead."""


class NotFittedError(CfcoreError, RuntimeError):
    """A model used before it has parameters: call `fit()` (or load a saved model) first."""


class NumericalError(CfcoreError, FloatingPointError):
    """A computation produced NaN or infinite values (a sampler's draw, a solve), which no result
    built on them could be trusted with."""


class MissingDependencyError(CfcoreError, ImportError):
    """An optional feature whose package is not installed; the message names the package."""


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM received while a `cfcore` command ran (raised by the command line).

    A `KeyboardInterrupt`, not a `CfcoreError`: it is no refusal of an input, and
    `except Exception` (or `except CfcoreError`) must not swallow it on its way to the command,
    which removes its temporary files, prints one line and exits with `128 + signum`.

    Attributes:
        signum: the signal's number (`signal.SIGINT`, `signal.SIGTERM`).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
