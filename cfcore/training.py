"""The training loop, owned by core: compiled chunks of steps on the backend, metrics between them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._backend import Batch, TrainState
from .data.batching import MinibatchSampler
from .data.ratings import Ratings
from .specs import MFSpec, OptimizerSpec


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite. The model keeps the last parameters whose loss was finite.

    Attributes:
        step: the step (number of updates applied) at which the loss was first non-finite.
        history: the history up to the last finite step.
    """

    def __init__(self, message: str, step: int, history: pd.DataFrame) -> None:
        super().__init__(message)
        self.step = step
        self.history = history


@dataclass
class _Session:
    """Backend-side state kept between `fit` calls so that a second `fit` continues."""

    backend: Any
    optimizer: OptimizerSpec
    state: TrainState
    prev: TrainState
    chunk: Callable
    step: int = 0
    history_rows: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def start(
        cls, previous, backend, optimizer, state, chunk, resume_step: int, history: pd.DataFrame
    ):
        """A session on `backend` that continues the step count and history of `previous` (or
        of a loaded model: `resume_step` and `history`) from the freshly built `state`."""
        step = previous.step if previous is not None else resume_step
        rows = previous.history_rows if previous is not None else history.to_dict("records")
        return cls(backend, optimizer, state, state, chunk, step, rows)


def history_row(
    step: int, terms: dict[str, float], test_mse: float | None, regularized: bool
) -> dict[str, float]:
    row: dict[str, float] = {"step": step, "train_mse": terms["observed"]}
    if test_mse is not None:
        row["test_mse"] = test_mse
    if regularized:
        row["observed_loss"] = terms["observed"]
        row["regularization_loss"] = terms["regularization"]
        row["gravity_loss"] = terms["gravity"]
        row["total_loss"] = terms["total"]
    return row


# Ratings per evaluation call: bounds the memory of the gathered [chunk, d] rows on large data.
EVAL_CHUNK = 1 << 21


def _terms(backend: Any, spec: MFSpec, params: Any, batch: Batch) -> dict[str, float]:
    """The objective's parts on `batch`, the observed MSE averaged over chunks of `EVAL_CHUNK`."""
    n = int(batch.values.shape[0])
    if n <= EVAL_CHUNK:
        return {
            k: float(backend.to_numpy(v))
            for k, v in backend.mf_loss_terms(spec, params, batch).items()
        }
    # The penalties do not depend on the ratings: compute them once, and only the MSE per chunk.
    mse_spec = dataclasses.replace(spec, regularization_coeff=0.0, gravity_coeff=0.0)
    observed = 0.0
    for start in range(0, n, EVAL_CHUNK):
        part = Batch(
            *(a[start : start + EVAL_CHUNK] for a in (batch.users, batch.items, batch.values))
        )
        terms = backend.mf_loss_terms(mse_spec, params, part)
        observed += float(backend.to_numpy(terms["observed"])) * int(part.values.shape[0])
    out = {"observed": observed / n}
    if spec.regularized:
        u, v = params["user"], params["item"]
        out["regularization"] = spec.regularization_coeff * float(
            backend.to_numpy(backend.l2_penalty(u, v))
        )
        out["gravity"] = spec.gravity_coeff * float(backend.to_numpy(backend.gravity(u, v)))
    out["total"] = out["observed"] + out.get("regularization", 0.0) + out.get("gravity", 0.0)
    return out


def _progress(enabled: bool, total: int):
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        transient=False,
    )


def run_training(
    spec: MFSpec,
    session: _Session,
    train: Ratings,
    test: Ratings | None,
    *,
    steps: int,
    batch_size: int | None,
    seed: int,
    eval_every: int,
    progress: bool,
) -> pd.DataFrame:
    """Runs `steps` updates in compiled chunks of `eval_every` steps, evaluating between chunks.

    The only host synchronisations are between chunks: reading the divergence flag and the
    evaluation losses. Returns the rows added to the history as a frame.
    """
    be = session.backend
    data = be.device_batch(Batch.from_ratings(train))
    test_data = None if test is None else be.device_batch(Batch.from_ratings(test))
    sampler = None if batch_size is None else MinibatchSampler(len(train), batch_size, seed)

    def record() -> dict[str, float]:
        terms = _terms(be, spec, session.state.params, data)
        test_mse = None
        if test_data is not None:
            test_mse = _terms(be, spec, session.state.params, test_data)["observed"]
        row = history_row(session.step, terms, test_mse, spec.regularized)
        session.history_rows.append(row)
        return row

    new_rows_from = len(session.history_rows)
    if session.step == 0 and not session.history_rows:
        record()
    done = 0
    with _progress(progress, steps) as bar:
        task = bar.add_task("", total=steps) if bar is not None else None
        while done < steps:
            k = min(eval_every, steps - done)
            index = None if sampler is None else sampler.take(k)
            state, prev, bad = session.chunk(session.state, session.prev, data, k, index)
            bad = int(be.to_numpy(bad))
            if bad >= 0:
                # `prev` is the last state whose loss was finite: the one before step `bad`.
                at = session.step + bad
                session.state = prev if at > 0 else session.state
                session.prev = session.state
                session.step = max(at - 1, 0)
                history = pd.DataFrame(session.history_rows)
                raise TrainingDivergedError(
                    f"the training loss became NaN or infinite at step {at}; stopped there and kept "
                    f"the parameters of step {session.step}, the last with a finite loss. Lower the "
                    f"learning rate (now {session.optimizer.learning_rate:g}) or init_stddev.",
                    step=at,
                    history=history,
                )
            session.state, session.prev = state, prev
            session.step += k
            done += k
            row = record()
            if bar is not None:
                desc = "  ".join(f"{c}={row[c]:.4f}" for c in ("train_mse", "test_mse") if c in row)
                bar.update(task, advance=k, description=desc)
    return pd.DataFrame(session.history_rows[new_rows_from:])


def as_ratings(data: Any, what: str) -> Ratings:
    """Accepts `Ratings` or anything with a `.ratings` attribute holding them (a dataset)."""
    if isinstance(data, Ratings):
        return data
    inner = getattr(data, "ratings", None)
    if isinstance(inner, Ratings):
        return inner
    raise TypeError(
        f"{what} must be cfcore.Ratings (or a dataset holding them), got {type(data).__name__}"
    )


def check_steps(steps: Any, eval_every: Any) -> None:
    for name, v in (("steps", steps), ("eval_every", eval_every)):
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
