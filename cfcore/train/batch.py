"""K models trained in one compiled loop: the guarded step mapped over a leading model axis.

`cfcore.fit_many` prepares each model's fit as `fit` would (session, device data, compiled
chunk: `cfcore.models.base.collect`) and hands the sessions here. Every model runs the same
compiled step (same spec structure, same kind of optimizer); what differs between them travels
as data: parameters, optimizer state (a cfcore optimizer's learning rate lives there), the
coefficients (`cfcore.train.hyper`), and any training array a model built differently (an ALS
layout's per-row regularization). Those are stacked on a leading axis of length K and the guarded
step (`cfcore.train.loop.guarded_body`) is mapped over it by the backend's `vmap` capability;
arrays every model shares (the ratings, a pair layout) are passed once.

Each model keeps its own guard: a model whose loss or parameters turn non-finite stops at that
step with its last finite state (its `bad` entry), the others go on; `run_batch` returns the
`TrainingDivergedError` of each stopped model by its index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..backend.capabilities import capability
from ..backend.loops import tree_leaves, tree_with_leaves
from ..backend.programs import MAPPED_LOOPS, ProgramCache, remembered
from ..errors import CfcoreError, NotSupportedError
from .loop import ChunkResult
from .progress import between_chunks, progress_bar
from .session import Session, TrainingDivergedError

Tree = Any


def tree_item(tree: Tree, i: int) -> Tree:
    """Item `i` of the leading axis of every leaf of a stacked tree."""
    return tree_with_leaves(tree, iter([leaf[i] for leaf in tree_leaves(tree)]))


def _stack(be: Any, arrays: Sequence[Any]) -> Any:
    """Native arrays of one shape stacked along a new leading axis, on the device."""
    xp = be.xp
    return xp.concat([xp.reshape(a, (1, *tuple(a.shape))) for a in arrays], 0)


def stack_trees(be: Any, trees: Sequence[Tree]) -> Tree:
    """Trees of one structure (native leaves) as one tree of leaves stacked on axis 0."""
    columns = zip(*(tree_leaves(t) for t in trees), strict=True)
    return tree_with_leaves(trees[0], iter([_stack(be, list(c)) for c in columns]))


def _same(be: Any, arrays: Sequence[Any]) -> bool:
    first = arrays[0]
    if all(a is first for a in arrays):
        return True
    host = np.asarray(be.to_numpy(first))
    for a in arrays[1:]:
        other = np.asarray(be.to_numpy(a))
        if other.shape != host.shape or other.dtype != host.dtype:
            return False
        if not np.array_equal(other, host):
            return False
    return True


def batch_data(be: Any, datas: Sequence[Tree]) -> tuple[Tree, Tree]:
    """The models' training data as one tree, and its `vmap` axes.

    A leaf every model holds equal (by identity, else by value) is passed once (axis None); a
    leaf that differs is stacked (axis 0).

    Raises:
        NotSupportedError: a differing leaf's shapes differ between models (they cannot be
            stacked: such models do not share one compiled step).
    """
    columns = list(zip(*(tree_leaves(d) for d in datas), strict=True))
    shared, axes = [], []
    for column in columns:
        if _same(be, column):
            shared.append(column[0])
            axes.append(None)
            continue
        shapes = {tuple(int(s) for s in a.shape) for a in column}
        if len(shapes) > 1:
            raise NotSupportedError(
                f"the models' training data differ in shape ({sorted(shapes)}): they cannot be "
                "trained together; fit them one by one"
            )
        shared.append(_stack(be, column))
        axes.append(0)
    return tree_with_leaves(datas[0], iter(shared)), tree_with_leaves(datas[0], iter(axes))


def batch_xs(xs: Sequence[Tree]) -> tuple[Tree, Any]:
    """The models' per-step inputs of a chunk (host arrays `[k, ...]`, e.g. minibatch indices)
    as one tree and its axis: shared when equal (the same seed), else stacked on axis 1 (the
    loop runs over axis 0, the steps)."""
    first = xs[0]
    if first is None:
        return None, None
    leaves = [[np.asarray(a) for a in tree_leaves(x)] for x in xs]
    if all(
        all(np.array_equal(a, b) for a, b in zip(leaves[0], other, strict=True))
        for other in leaves[1:]
    ):
        return first, None
    stacked = [np.stack(column, axis=1) for column in zip(*leaves, strict=True)]
    return tree_with_leaves(first, iter(stacked)), 0


class BatchNotCompiled(NotSupportedError):
    """The backend could not compile the step mapped over models (e.g. TensorFlow's
    `vectorized_map` of an ALS sweep at a size whose loops it cannot vectorize); raised before
    any step ran, so the models can be trained one by one instead."""


_LOOPS: dict[tuple, Callable[..., Any]] = ProgramCache()


def _batched_loop(be: Any, body: Callable, data_axes: Tree, x_axes: Any) -> Callable[..., Any]:
    vmap = capability(be, "vmap")
    if vmap is None:
        raise NotSupportedError(f"the {be.name} backend cannot map a step over models (no vmap)")
    # `body` itself in the key, not its id: the key holds it, so its id is never reused by a
    # new body while the entry lives (its single-model chunk may be dropped first).
    key = (be.name, id(be), body, repr(data_axes), x_axes)
    return remembered(
        _LOOPS, key, lambda: be.compile_loop(vmap(body, (0, data_axes, x_axes))), MAPPED_LOOPS
    )


def can_batch(be: Any) -> bool:
    """Whether `be` trains several models in one compiled loop (it has `vmap`)."""
    return capability(be, "vmap") is not None


def run_batch(
    be: Any,
    sessions: Sequence[Session],
    body: Callable,
    datas: Sequence[Tree],
    next_xs: Sequence[Callable[[int], Any] | None],
    records: Sequence[Callable[[float | None], dict[str, float]]],
    *,
    steps: int,
    eval_every: int,
    progress: bool,
) -> dict[int, TrainingDivergedError]:
    """Runs `steps` updates of K sessions at once, in chunks of `eval_every`, recording each
    model's history row after each chunk (as `Session.run` does for one).

    Args:
        be: the backend (with `vmap`).
        sessions: the models' sessions (one device each, the same compiled step).
        body: that step (`chunk.body` of their compiled chunk).
        datas: each model's device data.
        next_xs: each model's `next_xs` (minibatch indices), or None for full-batch steps.
        records: each model's `record(mean loss of the chunk, or None before any step)`.
        steps: updates to run.
        eval_every: updates per chunk (a history row per model after each).
        progress: show one progress bar for the batch.

    Returns:
        The error of each model that stopped at a non-finite loss or parameters, by index; the
        model keeps its last finite state (as a single `fit` does), the others trained on.
    """
    count = len(sessions)
    data, data_axes = batch_data(be, datas)
    for session, record in zip(sessions, records, strict=True):
        if session.step == 0 and not session.history_rows:
            record(None)
    state = stack_trees(
        be, [(s.params, s.opt_state, s.prev_params, s.prev_opt_state) for s in sessions]
    )
    stopped: dict[int, TrainingDivergedError] = {}
    done = 0
    between_chunks("training", done, steps)
    with progress_bar(progress) as bar:
        task = bar.add_task(f"{count} models", total=steps) if bar is not None else None
        while done < steps:
            k = min(eval_every, steps - done)
            xs, x_axes = batch_xs([None if n is None else n(k) for n in next_xs])
            if xs is not None:
                xs = sessions[0].placement.data(xs)
            loop = _batched_loop(be, body, data_axes, x_axes)
            flags = np.array([0 if i in stopped else -1 for i in range(count)], np.int32)
            carry = {
                "params": state[0],
                "opt": state[1],
                "prev_params": state[2],
                "prev_opt": state[3],
                "bad": be.asarray(flags),
                "reason": be.asarray(np.zeros(count, np.int32)),
                "t": be.asarray(np.zeros(count, np.int32)),
                "loss_sum": be.asarray(np.zeros(count, np.float32)),
            }
            try:
                out = loop(carry, data, xs, None if xs is not None else k)
            except CfcoreError:
                raise
            except Exception as err:  # the framework's own, from compiling the mapped step
                if done > 0:
                    raise
                # Nothing has run yet (the sessions are untouched): the caller can train them
                # one by one instead.
                first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
                raise BatchNotCompiled(
                    f"the {be.name} backend could not compile this step mapped over models "
                    f"({type(err).__name__}: {first})"
                ) from err
            state = (out["params"], out["opt"], out["prev_params"], out["prev_opt"])
            bad = np.asarray(be.to_numpy(out["bad"]))
            reason = np.asarray(be.to_numpy(out["reason"]))
            loss_sum = np.asarray(be.to_numpy(out["loss_sum"]))
            for i, session in enumerate(sessions):
                if i in stopped:
                    continue
                mine = tree_item(state, i)
                if bad[i] >= 0:
                    params, opt, prev_params, prev_opt = mine
                    result = ChunkResult(
                        params, opt, prev_params, prev_opt,
                        int(bad[i]), int(reason[i]), float(loss_sum[i]),
                    )  # fmt: skip
                    stopped[i] = session.stop(result)
                    continue
                session.params, session.opt_state, session.prev_params, session.prev_opt_state = (
                    mine
                )
                session.step += k
                records[i](float(loss_sum[i]) / k)
            done += k
            if bar is not None:
                bar.update(task, advance=k, description=f"{count - len(stopped)} models")
            between_chunks("training", done, steps)
            if len(stopped) == count:
                break
    return stopped
