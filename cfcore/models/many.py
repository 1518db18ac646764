"""`fit_many`: K models of one class trained together, in one compiled loop where the backend
can map a step over models (`vmap`: JAX, TensorFlow, torch), else one after another.

Each model is prepared exactly as its own `fit` would prepare it (same checks, session, device
data, compiled chunk: `cfcore.models.base.collect`); the data they share is placed once
(`cfcore.backend.memo`). Models whose compiled step is the same (one class, one spec structure:
the same `spec_key`, the same kind of cfcore optimizer) then run as one batch
(`cfcore.train.batch`): their coefficients, learning rates, seeds and initial values differ,
nothing else. Each model ends in the state its own `fit` would have left, up to float32
rounding: a later `fit` of one of them continues from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..backend.memo import shared_inputs
from ..backend.registry import get_backend
from ..errors import ArgumentTypeError, ArgumentValueError
from ..train.batch import BatchNotCompiled, can_batch, run_batch
from ..train.session import TrainingDivergedError, batch_memory
from .base import Model, Prepared, collect


@dataclass
class ManyFit:
    """What `fit_many` returns.

    Attributes:
        histories: each model's whole history (`model.history`), in the order given.
        errors: `{index: TrainingDivergedError}` of the models that stopped at a non-finite
            loss or parameters (each keeps its last finite state; the others trained on).
        batched: whether some models trained in a compiled loop of several (else all one
            after another).
        reason: why models trained one after another (no `vmap`, several devices, or a step
            the backend could not compile mapped over models); empty when none did.
        groups: the indices of the models trained together, one list per compiled loop: models
            whose compiled step differs (a zero and a nonzero coefficient, two optimizer kinds)
            train in separate batches.
    """

    histories: list[pd.DataFrame]
    errors: dict[int, TrainingDivergedError] = field(default_factory=dict)
    batched: bool = True
    reason: str = ""
    groups: list[list[int]] = field(default_factory=list)


def _per_model(name: str, value: Any, count: int) -> list[Any]:
    if isinstance(value, list | tuple):
        if len(value) != count:
            raise ArgumentValueError(
                f"{name} has {len(value)} entries for {count} models: give one value for all, "
                "or one per model"
            )
        return list(value)
    return [value] * count


def fit_many(
    models: Sequence[Model],
    train: Any,
    *,
    seed: int | Sequence[int] = 0,
    optimizer: Any = None,
    backend: Any = None,
    progress: bool = True,
    **fit_kwargs: Any,
) -> ManyFit:
    """Trains several models of one class on the same data at once.

    On a backend that maps a step over models (`vmap`: JAX, TensorFlow, torch), models that
    share a compiled step (one spec structure: only run-time coefficients such as
    `regularization_coeff` differ, and none of them between zero and nonzero; one kind of
    cfcore optimizer, learning rates free) train in one compiled loop: parameters, optimizer
    states and coefficients stacked on a leading model axis, the data shared. Models of
    different steps train in separate batches (`ManyFit.groups`). Without `vmap` (or on
    several devices) they train one after another (`ManyFit.batched` False, with the reason).

    Args:
        models: the models (distinct objects of one class); each is trained in place, as by its
            own `fit`, and a second `fit_many` or `fit` continues it.
        train: the training data every model fits.
        seed: one seed for all, or one per model.
        optimizer: one optimizer for all, or one per model (gradient-trained models; omit for
            closed-form sweeps).
        backend: as `fit` takes it.
        progress: one progress bar for the batch.
        **fit_kwargs: the rest of the models' `fit` arguments (`steps`, `eval_every`, `test`,
            `batch_size`, ...), the same for every model.

    Returns:
        `ManyFit`: each model's history, and which stopped early.

    Raises:
        ArgumentTypeError: `models` is not a non-empty sequence of distinct models of one class.
        ArgumentValueError: a per-model list of the wrong length, or a bad `fit` argument
            (each model's `fit` checks its own, before any training).
        ResourceLimitError: the batch's training state would not fit in memory (refused before
            the model that would overflow it is placed).

    Example:
        >>> import cfcore
        >>> r = cfcore.synthetic_ratings(40, 30, 300, seed=0)
        >>> models = [cfcore.WALS(4, regularization_coeff=c) for c in (0.1, 0.3, 1.0)]
        >>> out = cfcore.fit_many(models, r, steps=4, eval_every=2, backend="numpy",
        ...                       progress=False)
        >>> [len(h) for h in out.histories], out.batched
        ([3, 3, 3], False)
    """
    models = _checked_models(models)
    count = len(models)
    seeds = _per_model("seed", seed, count)
    optimizers = _per_model("optimizer", optimizer, count)
    be = get_backend(backend)
    with shared_inputs(), batch_memory(), collect() as prepared:
        for model, s, opt in zip(models, seeds, optimizers, strict=True):
            extra = {} if opt is None else {"optimizer": opt}
            fit = model.fit  # type: ignore[attr-defined]  (every trainable model has one)
            fit(train, seed=s, backend=be, progress=False, **extra, **fit_kwargs)
    reason = _why_not_batched(be, prepared)
    if reason:
        histories, errors = _one_by_one(prepared, progress)
        return ManyFit(histories, errors, False, reason, [[i] for i in range(count)])
    groups = _groups(prepared)
    errors: dict[int, TrainingDivergedError] = {}
    reasons: list[str] = []
    try:
        for group in list(groups):
            members = [prepared[i] for i in group]
            try:
                stopped = _run_group(be, members, progress)
            except BatchNotCompiled as err:
                # One by one instead (nothing had run); the group is reported as singles.
                reasons.append(str(err))
                _, alone = _one_by_one(members, progress)
                errors.update({group[j]: e for j, e in alone.items()})
                groups.remove(group)
                groups.extend([i] for i in group)
                continue
            errors.update({group[j]: e for j, e in stopped.items()})
    finally:
        histories = [p.keep_history() for p in prepared]
    batched = any(len(g) > 1 for g in groups)
    return ManyFit(histories, errors, batched, "; ".join(reasons), groups)


def _run_group(
    be: Any, members: list[Prepared], progress: bool
) -> dict[int, TrainingDivergedError]:
    first = members[0]
    return run_batch(
        be,
        [p.session for p in members],
        first.plan.chunk.body,  # type: ignore[attr-defined]
        [p.plan.data for p in members],
        [p.plan.next_xs for p in members],
        [p.record for p in members],
        steps=first.steps,
        eval_every=first.eval_every,
        progress=progress,
    )


def _checked_models(models: Any) -> list[Model]:
    if not isinstance(models, list | tuple) or not models:
        raise ArgumentTypeError(
            f"models must be a non-empty list of cfcore models; got {type(models).__name__}"
        )
    for i, m in enumerate(models):
        if not isinstance(m, Model):
            raise ArgumentTypeError(f"models[{i}] is a {type(m).__name__}, not a cfcore model")
    kinds = {type(m) for m in models}
    if len(kinds) > 1:
        names = ", ".join(sorted(k.__name__ for k in kinds))
        raise ArgumentTypeError(f"models must be of one class to train together; got {names}")
    if len({id(m) for m in models}) != len(models):
        raise ArgumentValueError("models holds the same model twice; give distinct models")
    return list(models)


def _why_not_batched(be: Any, prepared: list[Prepared]) -> str:
    """Empty if the prepared fits can run in batches, else why not."""
    if not can_batch(be):
        return f"the {be.name} backend cannot map a step over models"
    if any(p.session.placement.devices_key is not None for p in prepared):
        return "models placed on several devices train one after another"
    if not all(hasattr(p.plan.chunk, "body") for p in prepared):
        return "the model's compiled chunk cannot be mapped"
    return ""


def _groups(prepared: list[Prepared]) -> list[list[int]]:
    """The models by compiled step (one spec structure and kind of optimizer: e.g. a zero and
    a nonzero gravity are two programs), in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prepared):
        groups.setdefault(id(p.plan.chunk), []).append(i)
    return list(groups.values())


def _one_by_one(
    prepared: list[Prepared], progress: bool
) -> tuple[list[pd.DataFrame], dict[int, TrainingDivergedError]]:
    errors: dict[int, TrainingDivergedError] = {}
    for i, p in enumerate(prepared):
        try:
            p.run(progress)
        except TrainingDivergedError as e:
            errors[i] = e
    return [p.model.history for p in prepared], errors
