"""Compiled chunks of guarded training steps: the one training loop body of every model.

A step is an *update* `update(params, opt_state, batch) -> (objective, new_params, new_opt_state)`,
the objective taken at `params` (before the update). Two kinds exist:

* a gradient step (`gradient_update`): a model's loss `loss(params, batch) -> (total, parts)`
  written on the backend's operations, differentiated by the backend, and an optimizer's update
  rule (`cfcore.optim`);
* a closed-form sweep (`sweep_update`): `sweep(params, batch) -> (objective, new_params)`, e.g.
  an alternating-least-squares half-sweep per table, with no optimizer state.

This module wraps an update into a guarded step and asks the backend to compile a loop of such
steps (`Backend.compile_loop`), so a chunk of steps runs with no host synchronisation.

The guard: a step is applied only if its loss (before the update) is finite *and* the parameters
it produces are finite. At the first step that fails, the loop stops changing the state and records
the step's offset and why, so the host can keep the last finite parameters and say what happened.
Checking the new parameters as well catches minibatch divergence, where an update blows up rows
that the next minibatches need not touch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..optim.rules import Rule
from .hyper import HYPER

# Why a step was refused (the `reason` of a chunk).
LOSS_NOT_FINITE = 1
PARAMS_NOT_FINITE = 2


@dataclass(frozen=True)
class ChunkResult:
    """What one compiled chunk of training steps returns (host values except the states).

    Attributes:
        params, opt_state: the state after the chunk, or at the refused step.
        prev_params, prev_opt_state: the state one step before `params` (for a non-finite loss at
            the state reached, that is the last state whose loss was finite).
        bad_step: -1 if every step was applied, else the 0-based offset of the refused step.
        reason: `LOSS_NOT_FINITE` or `PARAMS_NOT_FINITE` (0 when `bad_step` is -1).
        loss_sum: the sum of the applied steps' losses (their mean is the chunk's training loss).
    """

    params: Any
    opt_state: Any
    prev_params: Any
    prev_opt_state: Any
    bad_step: int
    reason: int
    loss_sum: float


def _select(xp: Any, pred: Any, on_true: Any, on_false: Any) -> Any:
    if isinstance(on_true, dict):
        return {k: _select(xp, pred, on_true[k], on_false[k]) for k in on_true}
    if isinstance(on_true, list | tuple):
        out = [_select(xp, pred, a, b) for a, b in zip(on_true, on_false, strict=True)]
        return type(on_true)(*out) if hasattr(on_true, "_fields") else type(on_true)(out)
    if on_true is None:
        return None
    return xp.where(pred, on_true, on_false)


def _all_finite(xp: Any, params: dict[str, Any]) -> Any:
    # One reduction per table: a sum is non-finite iff some element is (or the sum overflows,
    # which at float32 means the parameters have diverged anyway).
    flags = [xp.isfinite(xp.sum(p)) for p in params.values()]
    out = flags[0]
    for f in flags[1:]:
        out = out & f
    return out


Update = Callable[[dict[str, Any], Any, Any], tuple[Any, dict[str, Any], Any]]
"""`update(params, opt_state, batch) -> (objective at params, new params, new opt_state)`."""


def gradient_update(
    be: Any, loss: Callable[[dict[str, Any], Any], tuple[Any, Any]], rule: Rule
) -> Update:
    """The gradient step of `loss` under the optimizer `rule`."""
    grad = be.value_and_grad(loss)

    def update(params: dict[str, Any], opt: Any, batch: Any) -> tuple[Any, dict[str, Any], Any]:
        (total, _), grads = grad(params, batch)
        new_params, new_opt = rule.update(grads, opt, params)
        return total, new_params, new_opt

    return update


def sweep_update(sweep: Callable[[dict[str, Any], Any], tuple[Any, dict[str, Any]]]) -> Update:
    """A closed-form step: `sweep(params, batch) -> (objective at params, new params)`; the
    optimizer state (empty) passes through."""

    def update(params: dict[str, Any], opt: Any, batch: Any) -> tuple[Any, dict[str, Any], Any]:
        total, new_params = sweep(params, batch)
        return total, new_params, opt

    return update


def make_chunk(
    be: Any,
    loss: Callable[[dict[str, Any], Any], tuple[Any, Any]],
    rule: Rule,
    take_batch: Callable[[Any, Any], Any],
) -> Callable[..., ChunkResult]:
    """A compiled chunk of guarded gradient steps of `loss` under `rule`.

    Args:
        be: the backend.
        loss: `loss(params, batch) -> (total, parts)`.
        rule: the optimizer's update rule.
        take_batch: `take_batch(data, x) -> batch`: the step's batch from the training data and
            the step's slice of `xs` (None for full-batch steps).

    Returns:
        As `make_update_chunk`.
    """
    return make_update_chunk(be, gradient_update(be, loss, rule), take_batch)


def make_update_chunk(
    be: Any, update: Update, take_batch: Callable[[Any, Any], Any]
) -> Callable[..., ChunkResult]:
    """A compiled chunk of guarded steps of any `update` (gradient step or closed-form sweep).

    Args:
        be: the backend.
        update: see `Update`.
        take_batch: as in `make_chunk`.

    Returns:
        `run(params, opt_state, prev_params, prev_opt_state, data, xs=None, num_steps=None)
        -> ChunkResult`; see `Backend.compile_loop` for `xs` and `num_steps`.
    """
    body = guarded_body(be, update, take_batch)
    loop = be.compile_loop(body)

    def run(params, opt_state, prev_params, prev_opt_state, data, xs=None, num_steps=None):
        carry = start_carry(be, params, opt_state, prev_params, prev_opt_state)
        out = loop(carry, data, xs, num_steps)
        return ChunkResult(
            out["params"],
            out["opt"],
            out["prev_params"],
            out["prev_opt"],
            int(be.to_numpy(out["bad"])),
            int(be.to_numpy(out["reason"])),
            float(be.to_numpy(out["loss_sum"])),
        )

    # What `cfcore.train.batch` maps over a batch of models: the guarded step itself.
    run.body = body  # type: ignore[attr-defined]
    return run


def start_carry(
    be: Any, params: Any, opt_state: Any, prev_params: Any, prev_opt_state: Any, bad: Any = None
) -> dict[str, Any]:
    """The loop's carry at the start of a chunk (`bad` -1: no step refused yet)."""
    int0 = be.asarray(np.int32(0))
    return {
        "params": params,
        "opt": opt_state,
        "prev_params": prev_params,
        "prev_opt": prev_opt_state,
        "bad": be.asarray(np.int32(-1)) if bad is None else bad,
        "reason": int0,
        "t": int0,
        "loss_sum": be.asarray(np.float32(0.0)),
    }


def guarded_body(
    be: Any, update: Update, take_batch: Callable[[Any, Any], Any]
) -> Callable[[dict, Any, Any], dict]:
    """`body(carry, data, x) -> carry`: one guarded step of `update` (see the module docstring).

    A carry whose `bad` is already >= 0 is left unchanged (a model stopped earlier)."""
    xp = be.xp

    def body(carry: dict, data: Any, x: Any) -> dict:
        params, opt = carry["params"], carry["opt"]
        batch = take_batch(data, x)
        if isinstance(data, dict) and HYPER in data and isinstance(batch, dict):
            # The model's run-time coefficients ride along with every batch (`hyper`).
            batch = {**batch, HYPER: data[HYPER]}
        total, new_params, new_opt = update(params, opt, batch)
        loss_ok = xp.isfinite(total)
        ok = loss_ok & _all_finite(xp, new_params) & (carry["bad"] < 0)
        first = (carry["bad"] < 0) & ~ok
        reason = xp.where(loss_ok, PARAMS_NOT_FINITE, LOSS_NOT_FINITE)
        return {
            "params": _select(xp, ok, new_params, params),
            "opt": _select(xp, ok, new_opt, opt),
            "prev_params": _select(xp, ok, params, carry["prev_params"]),
            "prev_opt": _select(xp, ok, opt, carry["prev_opt"]),
            "bad": xp.where(first, carry["t"], carry["bad"]),
            "reason": xp.where(first, reason, carry["reason"]),
            "t": carry["t"] + 1,
            "loss_sum": carry["loss_sum"] + xp.where(ok, total, xp.zeros_like(total)),
        }

    return body


def make_step(be: Any, loss: Callable, rule: Rule) -> Callable:
    """One compiled, unguarded step `(params, opt_state, batch) -> (params, opt_state, parts)`.

    For benchmarks and tests that call steps one at a time; `fit` runs chunks (`make_chunk`).
    `parts` are the loss parts before the update.
    """
    grad = be.value_and_grad(loss)

    def step(params, opt_state, batch):
        (_, parts), grads = grad(params, batch)
        new_params, new_opt = rule.update(grads, opt_state, params)
        return new_params, new_opt, parts

    return be.compile(step)
