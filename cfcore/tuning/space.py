"""Search spaces of `cfcore.tune`: what each hyper-parameter may take, and how points are drawn.

A space is a dict `{hyper-parameter: values}`; each value is one of

* a list or tuple: the values to try (a grid enumerates them; random and TPE search pick one);
* `choice(a, b, ...)`: the same, spelled out;
* `uniform(low, high)`: a float drawn uniformly (random, TPE only);
* `loguniform(low, high)`: a float whose logarithm is uniform, for scales such as a learning
  rate or an L2 coefficient (random, TPE only);
* `intrange(low, high, step=1)`: the ints `low, low + step, ..., high` (a grid enumerates them);
* a single number, string or bool: a fixed value, the same for every point.

Example:
    >>> from cfcore.tuning import loguniform, choice
    >>> space = {"embedding_dim": choice(16, 32), "regularization_coeff": loguniform(1e-3, 1)}
    >>> len(grid_points({"embedding_dim": [16, 32], "solver": "cg"}))
    2
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ArgumentTypeError, ArgumentValueError

Point = dict[str, Any]
"""One setting: `{hyper-parameter: value}`, plain Python values."""

_SCALARS = (bool, int, float, str, np.generic)


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value it holds (JSON and CSV write those)."""
    return value.item() if isinstance(value, np.generic) else value


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ArgumentTypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ArgumentValueError(f"{name} must be finite, got {value!r}")
    return float(value)


class Distribution:
    """Base class of the values a hyper-parameter may take (see the module docstring)."""

    def grid(self, name: str) -> list[Any]:
        """Every value, for a grid; refused by the continuous distributions."""
        raise ArgumentValueError(
            f"{name}: {self!r} is continuous and has no grid: give a list of values, or use "
            "search='random' or 'tpe'"
        )

    def sample(self, rng: np.random.Generator) -> Any:
        """One value drawn with `rng`."""
        raise NotImplementedError

    def suggest(self, trial: Any, name: str) -> Any:
        """One value asked of an Optuna trial."""
        raise NotImplementedError

    def corners(self) -> list[Any]:
        """The values a space check builds the model with (the ends of a range)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Choice(Distribution):
    """One of `values` (a list in a space means the same)."""

    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ArgumentValueError("choice() needs at least one value")
        for v in self.values:
            if not isinstance(v, _SCALARS):
                raise ArgumentTypeError(
                    f"a choice's values must be numbers, strings or bools, got {v!r}"
                )
        object.__setattr__(self, "values", tuple(_plain(v) for v in self.values))

    def grid(self, name: str) -> list[Any]:
        return list(self.values)

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]

    def suggest(self, trial: Any, name: str) -> Any:
        # Optuna stores categorical values by index: any mix of scalars works.
        return _plain(trial.suggest_categorical(name, list(self.values)))

    def corners(self) -> list[Any]:
        return list(self.values)


@dataclass(frozen=True)
class Uniform(Distribution):
    """A float uniform in `[low, high]`."""

    low: float
    high: float

    def __post_init__(self) -> None:
        low, high = _number("uniform's low", self.low), _number("uniform's high", self.high)
        if not low < high:
            raise ArgumentValueError(f"uniform needs low < high, got low={low!r}, high={high!r}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def suggest(self, trial: Any, name: str) -> float:
        return float(trial.suggest_float(name, self.low, self.high))

    def corners(self) -> list[Any]:
        return [self.low, self.high]


@dataclass(frozen=True)
class LogUniform(Uniform):
    """A float in `[low, high]` whose logarithm is uniform (0 < low < high)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.low <= 0:
            raise ArgumentValueError(f"loguniform needs 0 < low, got low={self.low!r}")

    def sample(self, rng: np.random.Generator) -> float:
        return float(np.exp(rng.uniform(np.log(self.low), np.log(self.high))))

    def suggest(self, trial: Any, name: str) -> float:
        return float(trial.suggest_float(name, self.low, self.high, log=True))


@dataclass(frozen=True)
class IntRange(Distribution):
    """The ints `low, low + step, ..., high` (`high` included when the steps reach it)."""

    low: int
    high: int
    step: int = 1

    def __post_init__(self) -> None:
        for what in ("low", "high", "step"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise ArgumentTypeError(f"intrange's {what} must be an int, got {v!r}")
            object.__setattr__(self, what, int(v))
        if self.step < 1 or self.low > self.high:
            raise ArgumentValueError(
                f"intrange needs low <= high and step >= 1, got low={self.low}, "
                f"high={self.high}, step={self.step}"
            )

    def grid(self, name: str) -> list[Any]:
        return list(range(self.low, self.high + 1, self.step))

    def sample(self, rng: np.random.Generator) -> int:
        count = (self.high - self.low) // self.step + 1  # without listing a wide range
        return self.low + self.step * int(rng.integers(count))

    def suggest(self, trial: Any, name: str) -> int:
        return int(trial.suggest_int(name, self.low, self.high, step=self.step))

    def corners(self) -> list[Any]:
        return [self.low, self.low + self.step * ((self.high - self.low) // self.step)]


def choice(*values: Any) -> Choice:
    """One of `values`: `choice(16, 32, 64)`."""
    return Choice(values)


def uniform(low: float, high: float) -> Uniform:
    """A float uniform in `[low, high]` (random and TPE search)."""
    return Uniform(low, high)


def loguniform(low: float, high: float) -> LogUniform:
    """A float in `[low, high]`, `0 < low`, uniform on a log scale (random and TPE search)."""
    return LogUniform(low, high)


def intrange(low: int, high: int, step: int = 1) -> IntRange:
    """The ints `low, low + step, ..., high` (every search, a grid included)."""
    return IntRange(low, high, step)


def normalize_space(space: Any) -> dict[str, Distribution]:
    """`space` with every entry as a `Distribution` (a list becomes a `Choice`, a single value a
    one-value `Choice`).

    Raises:
        ArgumentTypeError: `space` is not a dict of str keys, or a value is of no known form.
        ArgumentValueError: an empty list, or a bad range (naming the hyper-parameter).
    """
    if not isinstance(space, Mapping):
        raise ArgumentTypeError(
            f"space must be a dict {{hyper-parameter: values}}, got {type(space).__name__}"
        )
    out: dict[str, Distribution] = {}
    for name, values in space.items():
        if not isinstance(name, str):
            raise ArgumentTypeError(f"space keys must be hyper-parameter names, got {name!r}")
        try:
            if isinstance(values, Distribution):
                out[name] = values
            elif isinstance(values, list | tuple):
                out[name] = Choice(tuple(values))
            elif isinstance(values, _SCALARS):
                out[name] = Choice((values,))
            else:
                raise ArgumentTypeError(
                    f"got {values!r}: give a list of values, a single value, or "
                    "choice/uniform/loguniform/intrange"
                )
        except (ArgumentTypeError, ArgumentValueError) as err:
            raise type(err)(f"space[{name!r}]: {err}") from None
    return out


def grid_points(space: Any) -> list[Point]:
    """Every combination of the space's values, the last hyper-parameter varying fastest."""
    dists = normalize_space(space)
    axes = [dists[name].grid(name) for name in dists]
    return [dict(zip(dists, combo, strict=True)) for combo in itertools.product(*axes)]


def random_point(space: dict[str, Distribution], rng: np.random.Generator) -> Point:
    """One point drawn with `rng`, the hyper-parameters in the space's order."""
    return {name: _plain(d.sample(rng)) for name, d in space.items()}


def corner_points(space: dict[str, Distribution]) -> list[Point]:
    """Points that vary one hyper-parameter at a time over its `corners` (the others at their
    first corner): building each model checks every value a search could reach the ends of."""
    base = {name: d.corners()[0] for name, d in space.items()}
    points = [base]
    for name, d in space.items():
        points += [{**base, name: v} for v in d.corners()[1:]]
    return points


_NAMED = {"choice": Choice, "uniform": Uniform, "loguniform": LogUniform, "intrange": IntRange}


def space_from_json(doc: Any, where: str = "space") -> dict[str, Any]:
    """A space from its JSON form: `{name: [values] | value | {"loguniform": [low, high]}}`
    (also `"uniform"`, `"intrange": [low, high]` or `[low, high, step]`, `"choice": [...]`).

    Raises:
        ArgumentValueError: naming the entry that is of no known form.
    """
    if not isinstance(doc, dict):
        raise ArgumentValueError(f"{where} must be a JSON object {{name: values}}, got {doc!r}")
    out: dict[str, Any] = {}
    for name, value in doc.items():
        if isinstance(value, dict):
            if len(value) != 1 or next(iter(value)) not in _NAMED:
                raise ArgumentValueError(
                    f"{where}[{name!r}]: expected one of {{{', '.join(map(repr, _NAMED))}: "
                    f"[...]}}, got {value!r}"
                )
            ((kind, args),) = value.items()
            if not isinstance(args, list):
                raise ArgumentValueError(f"{where}[{name!r}]: {kind} takes a list, got {args!r}")
            try:
                out[name] = Choice(tuple(args)) if kind == "choice" else _NAMED[kind](*args)
            except (ArgumentTypeError, ArgumentValueError) as err:
                raise type(err)(f"{where}[{name!r}]: {err}") from None
            except TypeError:
                raise ArgumentValueError(
                    f"{where}[{name!r}]: {kind} takes [low, high]"
                    f"{' or [low, high, step]' if kind == 'intrange' else ''}, got {args!r}"
                ) from None
        else:
            out[name] = value
    normalize_space(out)  # refuses what no search can use, naming it
    return out


def parse_value(text: str) -> Any:
    """A value written on the command line: an int, a float, true/false, else the string."""
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    lowered = text.lower()
    return {"true": True, "false": False}.get(lowered, text)


def parse_grid(option: str) -> tuple[str, list[Any]]:
    """`"regularization_coeff=0.1,0.2"` as `("regularization_coeff", [0.1, 0.2])`.

    Raises:
        ArgumentValueError: no `=`, no name or no value.
    """
    name, sep, values = option.partition("=")
    parts = [v for v in values.split(",") if v.strip()]
    if not sep or not name.strip() or not parts:
        raise ArgumentValueError(
            f"--grid expects NAME=VALUE,VALUE,... such as regularization_coeff=0.1,0.2; got "
            f"{option!r}"
        )
    return name.strip(), [parse_value(v) for v in parts]
