"""What every cfcore model shares: the one `fit` skeleton, and how a model turns into plain
arrays and back.

`Model` holds the state that every model has: the training session (so that a second `fit`
continues), the step count, the history, the id vocabularies, the catalogue, the training-set
facts that fold-in needs (|Ω|, the rating scale) and saving. It runs every `fit` (`_fit`):

1. the step counts and seed are checked, then the model's inputs (`_checked_inputs`);
2. the backend is resolved and the training session continued or started (`_train_session`),
   from the current parameters or the model's initial ones (`_initial_params`);
3. the model remembers what it trained on (`_remember_inputs`);
4. the model plans the run (`_plan`: its device data, its compiled chunk of gradient steps or
   closed-form sweeps, its history row and progress columns, as a `FitPlan`);
5. the session runs it (chunks, divergence guard, progress bar) and the history is kept, also
   when training stops early.

Each model class adds its own parameters and writes its own part of the file:

* `_own_state(include_ratings)` returns the model's own metadata fields and arrays;
* `_restore_own(reader, meta, shape)` reads its own part back, checking it, and
  `_restore_links(reader, meta)` what needs the vocabularies and catalogue (restored between).

A model whose spec is a dataclass (`spec_type`) needs nothing more to be read back: the base
rebuilds the spec from the file's fields and the model through its public constructor.

`cfcore.persistence` keeps only the file container (format version, atomic write, damage
checks, the kind -> class registry), so adding a model touches its own module only.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd

from ..backend.registry import get_backend
from ..errors import ArgumentTypeError, ArgumentValueError, NotFittedError
from ..train.loop import ChunkResult
from ..train.placement import declare_trainer
from ..train.session import Session, check_steps

if TYPE_CHECKING:
    from ..persistence import StateReader

Params = dict[str, np.ndarray]
"""Float32 host arrays by parameter name."""

State = tuple[dict[str, Any], dict[str, np.ndarray]]
"""What a model writes to a file: JSON-ready metadata fields and plain arrays by entry name."""


@dataclass
class FitPlan:
    """What one `fit` runs, as a model's `_plan` makes it.

    Attributes:
        chunk: the compiled chunk of steps (`Session.chunk` for gradient steps,
            `Session.sweep_chunk` for closed-form sweeps).
        data: the device data every step reads.
        row: `row(mean training loss of the chunk, or None before any step)`, the history row
            at the session's current step.
        columns: the columns of a row that the progress bar shows (those present).
        next_xs: `next_xs(k)`, the next `k` steps' slices (minibatch indices, batches), or None
            for full-batch steps.
    """

    chunk: Callable[..., ChunkResult]
    data: Any
    row: Callable[[float | None], dict[str, float]]
    columns: tuple[str, ...]
    next_xs: Callable[[int], Any] | None = None


@dataclass
class Prepared:
    """A `fit` prepared but not run, for `cfcore.fit_many` to run with others (`collect`).

    Attributes:
        model: the model.
        session: its training session, started or continued.
        plan: what the fit would run.
        steps, eval_every: as the fit took them.
    """

    model: Model
    session: Session
    plan: FitPlan
    steps: int
    eval_every: int

    def record(self, loss: float | None) -> dict[str, float]:
        """Appends the history row at the session's current state (`FitPlan.row`)."""
        row = self.plan.row(loss)
        self.session.history_rows.append(row)
        return row

    def keep_history(self) -> pd.DataFrame:
        """The session's rows as the model's `history` (also after an early stop)."""
        self.model.history = pd.DataFrame(self.session.history_rows)
        return self.model.history

    def run(self, progress: bool) -> pd.DataFrame:
        """Runs the fit on its own (what `fit` does once prepared); returns the whole history.

        Raises:
            TrainingDivergedError: as `fit`.
        """
        plan = self.plan

        def label(row: dict[str, float]) -> str:
            return "  ".join(f"{c}={row[c]:.4f}" for c in plan.columns if c in row)

        try:
            self.session.run(
                plan.chunk,
                plan.data,
                steps=self.steps,
                eval_every=self.eval_every,
                next_xs=plan.next_xs,
                record=self.record,
                progress=progress,
                label=label,
            )
        finally:
            self.keep_history()
        return self.model.history


_PREPARED: ContextVar[list[Prepared] | None] = ContextVar("cfcore_prepared", default=None)


@contextmanager
def collect() -> Iterator[list[Prepared]]:
    """Within it, a model's `fit` prepares its session and plan, appends them to the list this
    yields and returns at once (its history unchanged): nothing is trained."""
    prepared: list[Prepared] = []
    token = _PREPARED.set(prepared)
    try:
        yield prepared
    finally:
        _PREPARED.reset(token)


@dataclass(frozen=True)
class CommandLine:
    """How `cfcore train --model NAME` builds, trains and evaluates a model class: the class's
    own declaration (`Model.command_line`), so that the command line lists no models.

    Attributes:
        name: the `--model` value.
        data: what it trains on: "ratings" (explicit ratings; MSE, RMSE and MAE printed),
            "implicit" (the ratings above `--threshold` as positives; ranking metrics of the
            held-out positives printed) or "users" (the softmax model's features and protocol).
        trains_by: "steps" (gradient steps of an optimizer), "sweeps" (closed-form sweeps, no
            optimizer) or "sweeps-or-steps" (sweeps, or gradient steps with `--optimizer`).
        arguments: `{option: constructor argument}` of the options the model is built from,
            e.g. `{"--dim": "embedding_dim"}` (the constructor checks their values).
        options: the other options it reads (e.g. "--batch-size", "--posterior-samples").
        defaults: the command line's default of options (the notebook's settings: "--dim",
            "--init-stddev", "--lr", "--steps", "--regularization", ...), where it differs
            from the constructor's default or the option's own.
        hints: `{option: what to use instead}`, said when the option is refused.
    """

    name: str
    data: Literal["ratings", "implicit", "users"]
    trains_by: Literal["steps", "sweeps", "sweeps-or-steps"]
    arguments: dict[str, str] = dataclasses.field(default_factory=dict)
    options: tuple[str, ...] = ()
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    hints: dict[str, str] = dataclasses.field(default_factory=dict)


FACTOR_ARGUMENTS = {"--dim": "embedding_dim", "--init-stddev": "init_stddev"}
"""The `CommandLine.arguments` of a factor model's shape and initial values."""
PENALTY_ARGUMENTS = {"--regularization": "regularization_coeff", "--gravity": "gravity_coeff"}
"""The `CommandLine.arguments` of the L2 and gravity coefficients."""

_COMMAND_LINE: dict[str, type[Model]] = {}


def command_line_models() -> dict[str, type[Model]]:
    """Every model class that declares a `command_line`, by its `--model` name, in the order
    they were defined (a copy)."""
    return dict(_COMMAND_LINE)


def whole_batch(data: Any, x: Any) -> Any:
    """The `take_batch` of full-batch steps and sweeps: every step reads all of `data`."""
    return data


class Model:
    """Base class of cfcore's models: training session, history, vocabularies, catalogue, files.

    Subclasses set `kind` (the file kind their spec's `to_dict()` names) and `spec_type` (the
    spec's dataclass), call `Model.__init__` with their spec, implement the fit hooks
    (`_checked_inputs`, `_initial_params`, `_remember_inputs`, `_plan`) and the state hooks
    named in the module docstring.

    Attributes:
        spec: the model's hyper-parameters (an `MFSpec` or `SoftmaxSpec`).
        history: one row per evaluation of every `fit` so far.
        catalog: the item frame of the training data (or None).
        user_ids: `[N]` original user id of each row (or None before the first fit).
        item_ids: `[M]` original item id of each row (or None before the first fit).
    """

    kind: ClassVar[str] = ""
    spec_type: ClassVar[Any] = None
    # The trainer kinds its `fit` asks a placement for, each with what it runs (for messages):
    # declared here, per class, so that core keeps no list of them.
    trainers: ClassVar[dict[str, str]] = {}
    # How the command line builds and trains it (None: not offered by `cfcore train`).
    command_line: ClassVar[CommandLine | None] = None
    spec: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Registers what the class itself declares: its trainer kinds and its `--model` name."""
        super().__init_subclass__(**kwargs)
        if cls.spec_type is not None:  # a model, not a base class of models
            for trainer, description in cls.trainers.items():  # a subclass runs them too
                declare_trainer(trainer, description, cls.__name__)
        line = cls.__dict__.get("command_line")
        if line is not None:
            known = _COMMAND_LINE.get(line.name)
            if known is not None and known.__qualname__ != cls.__qualname__:
                raise ArgumentValueError(
                    f"--model {line.name} is already {known.__qualname__}, not {cls.__qualname__}"
                )
            _COMMAND_LINE[line.name] = cls

    def __init__(self, spec: Any = None) -> None:
        if spec is not None:
            self.spec = spec
        self._session: Session | None = None
        # Host copy of the parameters: the truth when there is no session (a loaded model, added
        # users), else a cache of the session's parameters filled on demand.
        self._params: Params | None = None
        self.history = pd.DataFrame()
        self.catalog: pd.DataFrame | None = None
        self.user_ids: np.ndarray | None = None
        self.item_ids: np.ndarray | None = None
        self._num_train_ratings: int | None = None
        self._rating_scale: tuple[float, float] | None = None
        # Step count to continue from when there is no session (a loaded model, added users).
        self._resume_step = 0

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.spec.to_dict().items() if k != "kind")
        return f"{type(self).__name__}({fields})"

    # ------------------------------------------------------------------ training state

    def _train_session(
        self,
        backend: Any,
        optimizer: Any,
        start_params: Callable[[], Params],
        devices: Any = None,
        trainer: str = "gradient",
    ) -> Session:
        """The session a `fit` runs in: the current one continued, or a new one started
        (`devices`: see `cfcore.train.sharding.make_placement`; `trainer`: what the fit runs, a
        kind the class declares in `trainers`, refused up front by a placement that cannot run
        it)."""
        session = Session.continue_or_start(
            self._session,
            backend,
            optimizer,
            start_params,
            step=self._resume_step,
            history=self.history,
            devices=devices,
            trainer=trainer,
            model=type(self).__name__,
        )
        self._session = session
        self._params = None  # the session's state is now the truth
        return session

    def _fit(
        self,
        inputs: Any,
        trainer: str,
        optimizer: Any,
        steps: Any,
        eval_every: Any,
        seed: Any,
        backend: Any,
        devices: Any,
        progress: bool,
    ) -> pd.DataFrame:
        """Every model's `fit`: checks, session, plan, run, history (see the module docstring).

        Args:
            inputs: what the model's `fit` received, in the form its `_checked_inputs` takes.
            trainer: what the fit runs, a kind the class declares in `trainers` (a placement
                that cannot run it refuses before anything is placed).
            optimizer: a `cfcore.optimizers` spec or a framework's optimizer; None for
                closed-form sweeps.
            steps, eval_every, seed, backend, devices, progress: as the model's `fit` takes
                them (in this order, as every model's `fit` passes them on).

        Returns:
            The whole history so far.

        Raises:
            TrainingDivergedError: the loss or parameters turned non-finite (the model keeps
                the last finite state and the history up to it).
        """
        check_steps(steps, eval_every, seed)
        inputs = self._checked_inputs(inputs)
        be = get_backend(backend)

        def start_params() -> Params:
            return self.params_numpy() if self._has_params() else self._initial_params(inputs, seed)

        session = self._train_session(be, optimizer, start_params, devices, trainer)
        self._remember_inputs(inputs)
        plan = self._plan(session, inputs, seed)
        prepared = Prepared(self, session, plan, steps, eval_every)
        collector = _PREPARED.get()
        if collector is not None:
            # `cfcore.fit_many` runs this fit together with others' (`cfcore.models.many`).
            collector.append(prepared)
            return self.history
        return prepared.run(progress)

    def _checked_inputs(self, inputs: Any) -> Any:
        """`fit`'s inputs checked (bad ones refused before anything is placed), normalised."""
        raise NotImplementedError

    def _initial_params(self, inputs: Any, seed: int) -> Params:
        """The parameters a first `fit` starts from (host float32 arrays)."""
        raise NotImplementedError

    def _remember_inputs(self, inputs: Any) -> None:
        """Keeps what the model needs of the training inputs after `fit` (vocabularies, ...);
        called once the session has started (a refused fit leaves the model as it was)."""

    def _plan(self, session: Session, inputs: Any, seed: int) -> FitPlan:
        """What the session runs: device data, compiled chunk, history row (`FitPlan`)."""
        raise NotImplementedError

    def _place(self, backend: Any, placement: Any, params: dict[str, Any]) -> None:
        """Holds `params`, native arrays already placed by `placement` on `backend`, as a
        session that the next `fit` on the same backend and devices continues from (with a
        fresh optimizer state); the host copy is dropped (`cfcore.load(..., devices=...)`)."""
        self._session = Session.placed(
            backend, placement, params, step=self._resume_step, history=self.history
        )
        self._params = None

    def _has_params(self) -> bool:
        return self._session is not None or self._params is not None

    def _detach(self, params: Params) -> None:
        """Replaces the parameters on the host and drops the session (its shapes no longer fit);
        the step count and history continue."""
        self._resume_step = self.step
        self._params = params
        self._session = None

    def params_numpy(self) -> Params:
        """Every parameter as a float32 NumPy array, by name, without copying (do not modify)."""
        if self._session is not None and self._params is None:
            self._params = self._session.params_numpy()
        if self._params is None:
            raise NotFittedError(f"{type(self).__name__} has no parameters yet: call fit() first")
        return self._params

    def embeddings_numpy(self) -> Params:
        """As `embeddings`, without copying (do not modify the arrays)."""
        return self.params_numpy()

    @property
    def embeddings(self) -> Params:
        """The model's embeddings by name, float32 copies (see each model for the names)."""
        return {k: v.copy() for k, v in self.embeddings_numpy().items()}

    @property
    def step(self) -> int:
        """Number of optimizer updates applied so far."""
        return self._resume_step if self._session is None else self._session.step

    @property
    def num_train_ratings(self) -> int | None:
        """|Ω|, the number of ratings of the last fit (used by the default fold-in λ)."""
        return self._num_train_ratings

    @property
    def rating_scale(self) -> tuple[float, float] | None:
        """`(lowest, highest)` rating of the training ratings; new ratings must lie inside."""
        return self._rating_scale

    # ------------------------------------------------------------------ files

    def save(self, path: Any, *, include_ratings: bool = True, sharded: bool = False) -> Any:
        """Writes the model to one file, atomically; read it back with `cfcore.load(path)`.

        See `cfcore.persistence` for the format.

        Args:
            path: the file to write (a `.npz` archive whatever its suffix); with `sharded`, the
                folder of a sharded checkpoint.
            include_ratings: also store the training ratings (matrix factorization) or which
                movies each user rated (softmax): needed to leave rated items out of
                recommendations, and to evaluate or retrain without the dataset.
            sharded: write one file per device shard of the tables, each copied from its own
                device, plus the index `model.npz` (`cfcore.persistence.save_sharded`): a model
                trained with `fit(..., devices=k)` is saved without gathering a whole table.

        Returns:
            The path written.

        Raises:
            ArgumentTypeError: `sharded` or `include_ratings` is not a bool.
            FileAccessError: the path cannot be written.
        """
        from ..persistence import save, save_sharded

        for name, flag in (("sharded", sharded), ("include_ratings", include_ratings)):
            if not isinstance(flag, bool | np.bool_):
                # A string such as "no" is truthy: never guess which was meant.
                raise ArgumentTypeError(f"{name} must be a bool, got {flag!r}")
        if sharded:
            return save_sharded(self, path, include_ratings=include_ratings)
        return save(self, path, include_ratings=include_ratings)

    def to_state(self, *, include_ratings: bool = True) -> State:
        """The model as metadata fields and arrays (what `cfcore.persistence.save` writes).

        Args:
            include_ratings: as in `save`.

        Returns:
            `(metadata, arrays)`: the shared fields (`model`, `spec`, `step`, `history`,
            `optimizer`, `num_train_ratings`, `rating_scale`, `shape`) and entries (`user_ids`,
            `item_ids`, `catalog`) plus the model's own.
        """
        meta, arrays = self._own_state(include_ratings)
        n, m = int(meta["shape"][0]), int(meta["shape"][1])
        history = self.history
        session = self._session
        meta = {
            "model": type(self).__name__,
            "spec": self.spec.to_dict(),
            "step": int(self.step),
            "history": {
                "columns": [str(c) for c in history.columns],
                "data": [[_plain(x) for x in row] for row in history.itertuples(index=False)],
            },
            "optimizer": None
            if session is None or session.loaded
            else _optimizer_dict(session.optimizer),
            "num_train_ratings": self.num_train_ratings,
            "rating_scale": None if self.rating_scale is None else list(self.rating_scale),
            **meta,
        }
        arrays = {
            "user_ids": _vocab_array(
                np.arange(n) if self.user_ids is None else self.user_ids, "user"
            ),
            "item_ids": _vocab_array(
                np.arange(m) if self.item_ids is None else self.item_ids, "item"
            ),
            **arrays,
        }
        if self.catalog is not None:
            text = self.catalog.to_json(orient="table", index=False, double_precision=15)
            arrays["catalog"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        return meta, arrays

    @classmethod
    def from_state(cls, reader: StateReader) -> Model:
        """A model of this class rebuilt from a file's state (what `cfcore.load` returns).

        Args:
            reader: the opened file (`reader.meta`, `reader[name]`); its `damaged` method makes
                the error for anything that does not check out.

        Raises:
            ModelFileError: the state is inconsistent (the message names the field).
        """
        meta = reader.meta
        spec = cls._spec_from_dict({k: v for k, v in meta["spec"].items() if k != "kind"})
        model = cls._from_spec(spec)
        shape = tuple(int(x) for x in meta["shape"])
        if len(shape) != 3:
            raise reader.damaged(f"the recorded shape {meta['shape']} is not [N, M, d]")
        model._restore_own(reader, meta, shape)  # first: its checks name the likeliest damage
        n, m, _ = shape
        user_ids, item_ids = np.asarray(reader["user_ids"]), np.asarray(reader["item_ids"])
        if len(user_ids) != n or len(item_ids) != m:
            raise reader.damaged(
                f"{len(user_ids)} user ids for {n} users, {len(item_ids)} item ids for {m} items"
            )
        model.user_ids, model.item_ids = user_ids, item_ids
        model.catalog = _read_catalog(reader, m)
        hist = meta["history"]
        history = pd.DataFrame(hist["data"], columns=hist["columns"])
        if "step" in history.columns and len(history):
            history["step"] = history["step"].astype(np.int64)
        model.history = history
        model._resume_step = int(meta["step"])
        model._num_train_ratings = meta.get("num_train_ratings")
        scale = meta.get("rating_scale")
        model._rating_scale = None if scale is None else (float(scale[0]), float(scale[1]))
        model._restore_links(reader, meta)
        return model

    @classmethod
    def declared_shapes(cls, meta: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """The shapes a file's entries must have, from its metadata: checked against the
        entries' headers before anything is decompressed.

        Raises:
            KeyError, TypeError, ValueError: the metadata lacks what the shapes need (the
                reading that follows names the problem).
        """
        n, m, _ = (int(x) for x in meta["shape"])
        return {"user_ids": (n,), "item_ids": (m,)} | cls._own_declared_shapes(meta)

    # ------------------------------------------------------------------ hooks of each model

    @classmethod
    def _own_declared_shapes(cls, meta: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """The shapes of the model's own entries (default: none checked ahead)."""
        return {}

    @classmethod
    def default_spec(cls) -> Any:
        """The spec of the constructor's defaults (`spec_type()`): the one place they are
        written; the constructors' signatures show the same numbers (a test holds them equal)."""
        return cls.spec_type()

    @classmethod
    def _spec_from_dict(cls, fields: dict[str, Any]) -> Any:
        """The spec of a file's `spec` fields (without `kind`): `spec_type(**fields)`."""
        if cls.spec_type is None:
            raise NotImplementedError(f"{cls.__name__} sets no spec_type")
        return cls.spec_type(**fields)

    @classmethod
    def _from_spec(cls, spec: Any) -> Any:
        """An untrained model of `spec`, made through the public constructor: the spec's fields
        that the constructor takes are passed by name, and the model keeps `spec` itself (with
        any field its constructor does not take)."""
        takes = inspect.signature(cls).parameters
        fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
        model = cls(**{k: v for k, v in fields.items() if k in takes})
        model.spec = spec
        return model

    def _own_state(self, include_ratings: bool) -> State:
        """The model's own metadata fields (with `shape`: `[N, M, d]`) and arrays."""
        raise NotImplementedError

    def _restore_own(
        self, reader: StateReader, meta: dict[str, Any], shape: tuple[int, ...]
    ) -> None:
        """Reads the model's own part of a file back, checking it against `shape`."""
        raise NotImplementedError

    def _restore_links(self, reader: StateReader, meta: dict[str, Any]) -> None:
        """Reads what needs the restored vocabularies and catalogue too (default: nothing)."""


# ---------------------------------------------------------------------------- encoding helpers


def _plain(x: Any) -> Any:
    """JSON-ready scalars: NaN becomes null, NumPy scalars Python ones."""
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _optimizer_dict(optimizer: Any) -> Any:
    # A framework's own optimizer object has no portable description: record only its type.
    to_dict = getattr(optimizer, "to_dict", None)
    return to_dict() if callable(to_dict) else {"native": type(optimizer).__name__}


def _vocab_array(ids: Any, what: str) -> np.ndarray:
    from ..persistence import ModelFileError

    arr = np.asarray(ids)
    if arr.dtype.kind in "iufb" or arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind == "O" and all(isinstance(x, str) for x in arr):
        return arr.astype(str)
    if arr.dtype.kind == "O" and all(
        isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_) for x in arr
    ):
        # Integer ids in an object column (a frame built from Python objects): store them as
        # int64, which reads back as the same numbers; past int64 they are refused below.
        try:
            return np.asarray(arr.tolist(), dtype=np.int64)
        except OverflowError:
            pass
    raise ModelFileError(
        f"cannot save the {what} vocabulary: its ids must be all numbers or all strings, got "
        f"dtype {arr.dtype} (first id {arr[0]!r})"
    )


def _read_catalog(reader: StateReader, m: int) -> pd.DataFrame | None:
    if "catalog" not in reader:
        return None
    text = reader["catalog"].tobytes().decode("utf-8")
    catalog = pd.read_json(io.StringIO(text), orient="table")
    if len(catalog) != m:
        raise reader.damaged(f"the catalog has {len(catalog)} rows for {m} items")
    return catalog
