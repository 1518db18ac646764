"""One trainer for every model: sessions of compiled chunks, history rows, the divergence stop.

A model hands the trainer its loss, how each step takes its batch, and how to evaluate a history
row; the trainer owns everything else: the optimizer state, the guarded compiled chunks
(`cfcore.train.loop`), where arrays live (`cfcore.train.placement`), the step count across `fit`
calls, the progress bar and the stop at the first non-finite loss or parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..backend.programs import TRAINING_LOOPS, ProgramCache, remembered
from ..data.ratings import as_ratings as as_ratings
from ..errors import ArgumentValueError, CfcoreError
from ..optim.rules import Rule, make_rule
from ..resources import check_memory, optimizer_slots
from ..specs import OptimizerSpec
from ..validate import check_int
from .loop import LOSS_NOT_FINITE, ChunkResult, make_chunk, make_update_chunk, sweep_update
from .placement import Placement
from .progress import between_chunks, progress_bar
from .sharding import make_placement


class TrainingDivergedError(CfcoreError, FloatingPointError):
    """The loss or the parameters became NaN or infinite; the model keeps the last finite state.

    Attributes:
        step: the step (number of updates applied) at which training stopped.
        history: the history up to the last finite step.
    """

    def __init__(self, message: str, step: int, history: pd.DataFrame) -> None:
        super().__init__(message)
        self.step = step
        self.history = history


# Compiled chunks by (backend, model key, optimizer): a model trained again, or a second model of
# the same spec, reuses the compiled loop instead of compiling it again (the most recently used
# `TRAINING_LOOPS` of them: see `cfcore.backend.programs`).
_CHUNKS: dict[tuple, Callable[..., ChunkResult]] = ProgramCache()


def _hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


@dataclass
class Session:
    """Backend-side training state kept between `fit` calls, so that a second `fit` continues.

    Attributes:
        backend: the backend it runs on.
        optimizer: what the user passed (a cfcore spec or a framework optimizer).
        rule: its update rule (None for a session of closed-form sweeps).
        placement: where parameters and data live.
        params, opt_state: the current state (native arrays).
        prev_params, prev_opt_state: the state one applied step earlier.
        step: number of updates applied so far (continued from a loaded model).
        history_rows: one dict per history row.
        loaded: parameters placed by `cfcore.load(..., devices=...)`, not trained in this
            session: the next `fit` on the same backend and devices takes them over with its
            own optimizer and a fresh optimizer state (`continue_or_start`).
    """

    backend: Any
    optimizer: Any
    rule: Rule | None
    placement: Placement
    params: dict[str, Any]
    opt_state: Any
    prev_params: dict[str, Any]
    prev_opt_state: Any
    step: int = 0
    history_rows: list[dict[str, float]] = field(default_factory=list)
    loaded: bool = False

    @classmethod
    def placed(
        cls,
        backend: Any,
        placement: Placement,
        params: dict[str, Any],
        *,
        step: int,
        history: pd.DataFrame | None = None,
    ) -> Session:
        """A session holding parameters already placed (native arrays from `placement`, e.g.
        `params_from_rows`) and no optimizer yet: a loaded model's (`loaded`)."""
        return cls(
            backend, None, None, placement, params, {}, params, {}, step, _rows(history), True
        )

    @classmethod
    def start(
        cls,
        backend: Any,
        optimizer: Any,
        params: dict[str, np.ndarray],
        *,
        step: int = 0,
        history: pd.DataFrame | None = None,
        placement: Placement | None = None,
    ) -> Session:
        """A session on `backend` from host `params`, continuing `step` and `history`.

        `optimizer` None: a session of closed-form sweeps (`sweep_chunk`), with no optimizer
        state.
        """
        check_training_memory(params, optimizer)
        placement = placement or Placement(backend)
        rule = None if optimizer is None else make_rule(backend, optimizer)
        native = placement.params(params)
        opt_state = {} if rule is None else rule.init(native)
        return cls(
            backend,
            optimizer,
            rule,
            placement,
            native,
            opt_state,
            native,
            opt_state,
            step,
            _rows(history),
        )

    def take_over(self, optimizer: Any) -> Session:
        """A new session on this one's placed parameters (a `loaded` session's), run by
        `optimizer` from a fresh optimizer state: nothing is gathered or placed again."""
        shapes = self.placement.shapes(self.params)
        # The memory check counts bytes only: zero-stride stand-ins of the tables' shapes.
        check_training_memory(
            {k: np.broadcast_to(np.zeros((), np.float32), s) for k, s in shapes.items()},
            optimizer,
        )
        rule = None if optimizer is None else make_rule(self.backend, optimizer)
        opt_state = {} if rule is None else rule.init(self.params)
        return Session(
            self.backend,
            optimizer,
            rule,
            self.placement,
            self.params,
            opt_state,
            self.params,
            opt_state,
            self.step,
            list(self.history_rows),
        )

    @classmethod
    def continue_or_start(
        cls,
        previous: Session | None,
        backend: Any,
        optimizer: Any,
        params: Callable[[], dict[str, np.ndarray]],
        *,
        step: int,
        history: pd.DataFrame,
        devices: Any = None,
        trainer: str = "gradient",
        model: str = "this model",
    ) -> Session:
        """`previous` if it runs on `backend` with the same optimizer and devices, else a new
        session (`devices` as `cfcore.train.sharding.make_placement` takes them). A `loaded`
        `previous` on `backend` and the same devices is taken over (`take_over`): its placed
        parameters with a fresh state of `optimizer`.

        A new session starts from the host parameters `params()` (called only then) and continues
        the step count and history of `previous`, or `step` and `history` (a loaded model's) when
        there is none. The optimizer state restarts.

        `trainer` (a kind declared by a model class, `trainer_kinds()`) is what the `model` (its
        class name) is about to run: a placement that cannot run it refuses here, before
        anything is placed (`Placement.check_trainer`: NotSupportedError).
        """
        placement = make_placement(backend, devices)
        placement.check_trainer(trainer, model)
        if (
            previous is not None
            and previous.backend is backend
            and previous.placement.devices_key == placement.devices_key
        ):
            if previous.loaded:
                return previous.take_over(optimizer)
            if same_optimizer(previous.optimizer, optimizer):
                return previous
        if previous is not None:
            step, history = previous.step, pd.DataFrame(previous.history_rows)
        return cls.start(
            backend, optimizer, params(), step=step, history=history, placement=placement
        )

    def params_numpy(self) -> dict[str, np.ndarray]:
        return self.placement.to_host(self.params)

    def chunk(self, key: Any, loss: Callable, take_batch: Callable) -> Callable[..., ChunkResult]:
        """The compiled chunk of gradient steps of `loss` for `key` (the model's spec and batch
        layout), built once."""
        if self.rule is None:
            raise ArgumentValueError(
                "this session has no optimizer: it runs closed-form sweeps only"
            )
        rule = self.rule
        # The loss of the unpadded problem, whatever padding the placement added, traced in the
        # placement's scope (multi-device kernels when sharded).
        placed_loss = self.placement.placed(loss)
        return self._cached(key, lambda: make_chunk(self.backend, placed_loss, rule, take_batch))

    def sweep_chunk(
        self, key: Any, sweep: Callable, take_batch: Callable
    ) -> Callable[..., ChunkResult]:
        """The compiled chunk of closed-form steps `sweep(params, batch) -> (objective, new
        params)` for `key`, built once; guarded like gradient steps."""
        return self._cached(
            ("sweep", key), lambda: make_update_chunk(self.backend, sweep_update(sweep), take_batch)
        )

    def _cached(self, key: Any, make: Callable[[], Callable[..., ChunkResult]]) -> Callable:
        # A cfcore optimizer's numbers are read at run time (`Rule.key`): chunks differing only
        # in them are one compiled chunk.
        optimizer = self.optimizer if self.rule is None or self.rule.key is None else self.rule.key
        full_key = (self.backend.name, id(self.backend), key, optimizer, self.placement.key)
        if not (_hashable(key) and _hashable(optimizer)):
            return make()
        return remembered(_CHUNKS, full_key, make, TRAINING_LOOPS)

    def run(
        self,
        run_chunk: Callable[..., ChunkResult],
        data: Any,
        *,
        steps: int,
        eval_every: int,
        next_xs: Callable[[int], Any] | None,
        record: Callable[[float | None], dict[str, float]],
        progress: bool,
        label: Callable[[dict[str, float]], str],
    ) -> None:
        """Runs `steps` updates in chunks of `eval_every`, recording a history row after each.

        Args:
            run_chunk: from `chunk`.
            data: the training data on the device (passed to every step).
            steps: number of updates.
            eval_every: steps per chunk (one history row per chunk).
            next_xs: `next_xs(k)` gives the next `k` steps' slices (minibatch indices, batches),
                or None for full-batch steps.
            record: `record(mean training loss of the chunk, or None before any step)` appends a
                history row to `history_rows` and returns it.
            progress: show the progress bar.
            label: the progress bar's text for a row.

        Raises:
            TrainingDivergedError: at the first step whose loss or new parameters are not finite.
        """
        if self.step == 0 and not self.history_rows:
            record(None)
        done = 0
        between_chunks("training", done, steps)
        with progress_bar(progress) as bar:
            task = bar.add_task("", total=steps) if bar is not None else None
            while done < steps:
                k = min(eval_every, steps - done)
                xs = None if next_xs is None else self.placement.data(next_xs(k))
                out = run_chunk(
                    self.params,
                    self.opt_state,
                    self.prev_params,
                    self.prev_opt_state,
                    data,
                    xs=xs,
                    num_steps=None if xs is not None else k,
                )
                if out.bad_step >= 0:
                    self._diverged(out)
                self.params, self.opt_state = out.params, out.opt_state
                self.prev_params, self.prev_opt_state = out.prev_params, out.prev_opt_state
                self.step += k
                done += k
                row = record(out.loss_sum / k)
                if bar is not None:
                    bar.update(task, advance=k, description=label(row))
                between_chunks("training", done, steps)

    def _diverged(self, out: ChunkResult) -> None:
        raise self.stop(out)

    def stop(self, out: ChunkResult) -> TrainingDivergedError:
        """Keeps the last finite state of a chunk that refused a step (`out.bad_step` >= 0) and
        returns the error that says so (`run` raises it; `cfcore.fit_many` reports it)."""
        at = self.step + out.bad_step
        lr = None if self.rule is None else self.rule.learning_rate
        if self.rule is None:
            advice = "Raise the regularization or lower init_stddev."
        elif lr is not None:
            advice = f"Lower the learning rate (now {lr:g}) or init_stddev."
        else:
            advice = "Lower the learning rate or init_stddev."
        if out.reason == LOSS_NOT_FINITE and at == 0:
            # Nothing was trained: the loss of the initial values is itself not finite.
            msg = (
                "the training loss is NaN or infinite at the initial values (step 0), before any "
                "update: check the ratings and the initial parameters for non-finite values"
            )
            kept = 0
        elif out.reason == LOSS_NOT_FINITE:
            # The state reached at step `at` has a non-finite loss: keep the one before it.
            self.params, self.opt_state = out.prev_params, out.prev_opt_state
            kept = at - 1
            msg = (
                f"the training loss became NaN or infinite at step {at}; stopped there and kept "
                f"the parameters of step {kept}, the last with a finite loss. {advice}"
            )
        else:
            # The update of step `at` would have produced non-finite parameters: keep step `at`.
            self.params, self.opt_state = out.params, out.opt_state
            kept = at
            msg = (
                f"the update at step {at} made parameters NaN or infinite (its loss was still "
                f"finite); stopped there and kept the parameters of step {kept}. {advice}"
            )
        self.prev_params, self.prev_opt_state = self.params, self.opt_state
        self.step = kept
        return TrainingDivergedError(msg, step=at, history=pd.DataFrame(self.history_rows))


def _rows(history: pd.DataFrame | None) -> list[dict[str, float]]:
    """A history frame as `Session.history_rows`."""
    records = [] if history is None or history.empty else history.to_dict("records")
    return [{str(k): v for k, v in r.items()} for r in records]


def check_training_memory(params: dict[str, np.ndarray], optimizer: Any) -> None:
    """Refuses, before placing anything on the device, a training state that cannot fit.

    A step holds the parameters, the previous parameters (for the divergence stop), the
    gradients and the new parameters, plus the optimizer's state now and one step earlier: about
    `(4 + 2·slots)` copies of the parameters (SGD has no slot, Adagrad one, Adam two).
    """
    param_bytes = float(sum(np.asarray(p).nbytes for p in params.values()))
    slots = optimizer_slots(optimizer)
    shapes = ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in params.items())
    nbytes = param_bytes * (4 + 2 * slots)
    detail = f"{shapes}; {4 + 2 * slots} copies of the parameters with this optimizer"
    what = f"training ({detail})"
    batch = _BATCH_BYTES.get()
    if batch is not None:
        # Models trained together (`cfcore.fit_many`): each one's state, and once more stacked.
        batch.append(nbytes)
        nbytes = 2 * sum(batch)
        what = (
            f"training {len(batch)} models together (the last: {detail}; twice over: each "
            "model's own state and the batch's stacked one)"
        )
    check_memory(
        nbytes,
        what,
        "lower the embedding dimension or the number of rows, or use an optimizer with less "
        "state (SGD keeps none, Adagrad one array per parameter, Adam two)",
    )


_BATCH_BYTES: ContextVar[list[float] | None] = ContextVar("cfcore_batch_bytes", default=None)


@contextmanager
def batch_memory() -> Iterator[None]:
    """Within it, `check_training_memory` counts every session started so far together (the
    models of one `cfcore.fit_many`), so that a batch that cannot fit is refused before the
    model that would overflow is placed."""
    token = _BATCH_BYTES.set([])
    try:
        yield
    finally:
        _BATCH_BYTES.reset(token)


def same_optimizer(a: Any, b: Any) -> bool:
    """Whether `fit` may continue the optimizer state: an equal spec, or the very same object."""
    if isinstance(a, OptimizerSpec) and isinstance(b, OptimizerSpec):
        return a == b
    return a is b


def check_steps(steps: Any, eval_every: Any, seed: Any = 0) -> None:
    """`fit`'s counts are positive ints and its seed an int >= 0 (NumPy ints accepted, bools not)."""
    for name, v in (("steps", steps), ("eval_every", eval_every)):
        check_int(name, v, minimum=1)
    check_int("seed", seed, minimum=0)
