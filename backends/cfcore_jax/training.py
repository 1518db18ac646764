"""Compiled training: one step, and chunks of steps that run on the device without host syncs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from cfcore._backend import TrainState
from cfcore.specs import MFSpec, OptimizerSpec

from .losses import mf_loss_terms
from .optimizers import to_optax


def _select(pred, on_true, on_false):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _make_update(spec: MFSpec, optimizer: OptimizerSpec):
    tx = to_optax(optimizer)

    def loss(params, users, items, values):
        terms = mf_loss_terms(spec, params, users, items, values)
        return terms["total"], terms

    grad_fn = jax.value_and_grad(loss, has_aux=True)

    def update(state: TrainState, users, items, values):
        (_, terms), grads = grad_fn(state.params, users, items, values)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), opt_state), terms

    return tx, update


def init_train_state(spec: MFSpec, params: dict[str, Any], optimizer: OptimizerSpec) -> TrainState:
    tx = to_optax(optimizer)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    return TrainState(params, tx.init(params))


def make_train_step(spec: MFSpec, optimizer: OptimizerSpec) -> Callable:
    """A jitted `(state, batch) -> (state, terms)`; `terms` are the losses before the update."""
    _, update = _make_update(spec, optimizer)

    @jax.jit
    def step(state, batch):
        return update(state, batch.users, batch.items, batch.values)

    return step


def make_train_chunk(spec: MFSpec, optimizer: OptimizerSpec) -> Callable:
    """A function running many steps in one compiled loop.

    Returns:
        `run(state, prev, data, num_steps, batch_index=None) -> (state, prev, bad_step)`. `data` is
        the whole training set on the device; `batch_index` (`[k, B]` int32 positions into it)
        selects a minibatch per step, else every step is full-batch. `prev` is the state before the
        last update whose loss was finite. At the first non-finite loss the loop stops updating and
        `bad_step` is its offset in the chunk (else -1): `prev` then holds the last finite state.
    """
    _, update = _make_update(spec, optimizer)

    def body(carry, users, items, values):
        state, prev, bad, t = carry
        new_state, terms = update(state, users, items, values)
        ok = jnp.isfinite(terms["total"]) & (bad < 0)
        bad = jnp.where((bad < 0) & ~ok, t, bad)
        return (_select(ok, new_state, state), _select(ok, state, prev), bad, t + 1)

    @jax.jit
    def run_full(state, prev, data, num_steps):
        def loop_body(_, carry):
            return body(carry, data.users, data.items, data.values)

        init = (state, prev, jnp.int32(-1), jnp.int32(0))
        state, prev, bad, _ = lax.fori_loop(0, num_steps, loop_body, init)
        return state, prev, bad

    @jax.jit
    def run_batches(state, prev, data, batch_index):
        def scan_body(carry, idx):
            return body(carry, data.users[idx], data.items[idx], data.values[idx]), None

        init = (state, prev, jnp.int32(-1), jnp.int32(0))
        (state, prev, bad, _), _ = lax.scan(scan_body, init, batch_index)
        return state, prev, bad

    def run(state, prev, data, num_steps, batch_index=None):
        if batch_index is None:
            return run_full(state, prev, data, jnp.int32(num_steps))
        return run_batches(state, prev, data, jnp.asarray(batch_index, jnp.int32))

    return run
