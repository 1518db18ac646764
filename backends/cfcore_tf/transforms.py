"""Transforms of the TensorFlow backend: autodiff, XLA compilation and compiled loops of steps."""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import tensorflow as tf
from tensorflow.experimental import dtensor

from cfcore.backend.loops import map_range, split_mapped
from cfcore.errors import ArgumentValueError

from . import kernels

# XLA compilation: about 1.7x faster per step than plain graph mode on ml-100k (see benchmarks/),
# and it fuses the gathers of the observed-pair dot into the reduction.
JIT_COMPILE = True

# No AutoGraph: core's mathematics has no tensor-dependent Python control flow (it runs on NumPy
# as written), and converting its source costs seconds per compiled function (about 5 s of a
# first ALS fit on ml-100k) and has miscompiled closures of the ALS half-sweeps.
AUTOGRAPH = False


def value_and_grad(fn: Callable) -> Callable:
    def value_and_grad_fn(params, *args):
        params = {k: tf.convert_to_tensor(v, tf.float32) for k, v in params.items()}
        with tf.GradientTape() as tape:
            tape.watch(params)
            value, aux = fn(params, *args)
        grads = tape.gradient(value, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        # Gathers give IndexedSlices; the contract (and the optimizers) want dense tensors.
        return (value, aux), {k: tf.convert_to_tensor(g) for k, g in grads.items()}

    return value_and_grad_fn


def compile(fn: Callable) -> Callable:  # noqa: A001
    """`fn` as one XLA program, traced per input shape (no reduce_retracing: core's mathematics
    may use static shapes, the embedding dimension of an identity, the row counts of a
    penalty); or, for arguments whose trace holds concurrent parts (`compile_parts`: an ALS
    sweep), a host graph calling them (see `Hosted`)."""
    return Hosted(fn)


# Concurrent parts (`compile_parts`). One XLA:CPU program runs on one core, but TensorFlow's
# executor runs independent ops of a non-XLA graph at once on its inter-op threads, XLA calls
# (functions compiled with `jit_compile=True`) among them. So a compiled function or loop of
# steps holding independent parts (an ALS half-sweep's blocks cut into runs,
# `cfcore.maths.als`) runs as a non-XLA graph (a "host graph", `Hosted`) calling each part, and
# the heavy kernels around them (`cfcore_tf._compiled`: the Gramians, the objective's pair
# dots), as XLA calls; what is left there is elementwise work over the tables.
_HOST_GRAPH: ContextVar[bool] = ContextVar("cfcore_tf_host_graph", default=False)
"""True while a host graph is traced (outside its XLA calls)."""

_PROBING: ContextVar[bool] = ContextVar("cfcore_tf_probing", default=False)
"""True while `Hosted` traces its XLA program to learn whether it holds parts."""


class _HostGraphNeeded(Exception):
    """Raised by `compile_parts` when the XLA program `Hosted` probes holds several parts: the
    trace stops there, and the function runs from a host graph instead."""


def in_host_graph() -> bool:
    """Whether a host graph is being traced now, outside its XLA calls (see `compile_parts`)."""
    return _HOST_GRAPH.get()


def default_parts() -> int:
    """The parts TensorFlow runs at once: the CPU cores this process may use, at most its
    inter-op threads where they are set (`tf.config.threading`; 0: as many as the cores)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # (not on Linux)
        cores = os.cpu_count() or 1
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    return max(1, min(cores, inter) if inter > 0 else cores)


def concurrent_parts(parts: int | None) -> int:
    """How many `compile_parts` parts run at once in the code traced now: `parts` (None:
    `default_parts()`) in a host graph or in the XLA program `Hosted` probes (whose parts then
    make it a host graph); else 1 (inside one XLA program, or eagerly, parts would run one
    after another: no point cutting the work)."""
    if not (_HOST_GRAPH.get() or _PROBING.get()):
        return 1
    return default_parts() if parts is None else int(parts)


def compile_parts(fns: list[Callable]) -> Callable:
    """`run(*args) -> [fns[0](*args), ...]`: independent computations, each compiled apart.

    In a host graph each part is an XLA call of its own; none reads another's output, so the
    executor runs them at once. Inside an XLA program (or eagerly) they are traced into it, one
    after another. While `Hosted` probes its XLA program, several parts stop the trace
    (`_HostGraphNeeded`): that function runs from a host graph.
    """
    compiled = [
        tf.function(_part(fn, i), jit_compile=JIT_COMPILE, autograph=AUTOGRAPH)
        for i, fn in enumerate(fns)
    ]

    def run(*args: Any) -> list[Any]:
        if _HOST_GRAPH.get():
            return [part(*args) for part in compiled]
        if _PROBING.get() and len(fns) > 1:
            raise _HostGraphNeeded
        return [fn(*args) for fn in fns]

    return run


def _part(fn: Callable, i: int) -> Callable:
    def part(*args: Any) -> Any:
        # Traced as an XLA program: what it calls is inlined, as in any compiled function.
        host, probing = _HOST_GRAPH.set(False), _PROBING.set(False)
        try:
            return fn(*args)
        finally:
            _PROBING.reset(probing)
            _HOST_GRAPH.reset(host)

    # Named, so that a graph's XLA calls of parts can be told apart (tests read them).
    part.__name__ = f"cfcore_part_{i}"
    return part


class Hosted:
    """`fn` compiled by XLA (`jit_compile=True`), or, for arguments whose trace holds several
    concurrent parts (`compile_parts`), traced as a host graph: a non-XLA graph whose parts
    (and heavy kernels) are XLA calls, which TensorFlow's executor runs at once.

    Which one is learnt once per argument signature, by tracing the XLA program with
    `_PROBING` set: several parts stop that trace at once (`_HostGraphNeeded`); without parts
    the trace is the one the call then runs (no second trace). Called inside another traced
    function, `fn` is part of that one's program, as any `tf.function` is.
    """

    def __init__(self, fn: Callable) -> None:
        self.xla = tf.function(fn, jit_compile=JIT_COMPILE, autograph=AUTOGRAPH)
        self.host = tf.function(fn, jit_compile=False, autograph=AUTOGRAPH)
        self._hosted: dict[tuple, bool] = {}

    def _is_hosted(self, args: tuple, kwargs: dict[str, Any]) -> bool:
        key = _signature((args, kwargs))
        if key not in self._hosted:
            token = _PROBING.set(True)
            try:
                self.xla.get_concrete_function(*args, **kwargs)
                self._hosted[key] = False
            except _HostGraphNeeded:
                self._hosted[key] = True
            finally:
                _PROBING.reset(token)
        return self._hosted[key]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not tf.executing_eagerly() or _has_dtensor((args, kwargs)):
            # Inside another traced function, or on DTensors (sharded: one device's share of
            # the rows each, no parts): as before parts existed.
            return self.xla(*args, **kwargs)
        if not self._is_hosted(args, kwargs):
            return self.xla(*args, **kwargs)
        token = _HOST_GRAPH.set(True)  # read while the host graph is traced
        try:
            return self.host(*args, **kwargs)
        finally:
            _HOST_GRAPH.reset(token)

    def get_concrete_function(self, *args: Any, **kwargs: Any) -> Any:
        """The traced function a call with these arguments runs (XLA or host graph)."""
        if not self._is_hosted(args, kwargs):
            return self.xla.get_concrete_function(*args, **kwargs)
        token = _HOST_GRAPH.set(True)
        try:
            return self.host.get_concrete_function(*args, **kwargs)
        finally:
            _HOST_GRAPH.reset(token)

    def experimental_get_compiler_ir(self, *args: Any, **kwargs: Any) -> Any:
        """The XLA program's compiler IR (`tf.function.experimental_get_compiler_ir`)."""
        return self.xla.experimental_get_compiler_ir(*args, **kwargs)


def _signature(tree: Any) -> tuple:
    """What a trace of `tree`'s arguments depends on: its structure, shapes and dtypes."""
    leaves = tuple(
        (tuple(leaf.shape), leaf.dtype.name) if isinstance(leaf, tf.Tensor) else repr(leaf)
        for leaf in tf.nest.flatten(tree)
    )
    return repr(tf.nest.map_structure(lambda _: 0, tree)), leaves


def compile_loop(body: Callable) -> Callable:
    """`run(carry, data, xs=None, num_steps=None)`: one XLA `while_loop` over the steps; or, for
    a step that holds concurrent parts (`compile_parts`), a non-XLA `while_loop` calling them."""

    def scan(carry, data, xs):
        num = tf.shape(tf.nest.flatten(xs)[0])[0]

        def step(t, c):
            x = tf.nest.map_structure(lambda a: a[t], xs)
            return t + 1, body(c, data, x)

        return tf.while_loop(lambda t, c: t < num, step, (tf.constant(0), carry))[1]

    def repeat(carry, data, num_steps):
        def step(t, c):
            return t + 1, body(c, data, None)

        return tf.while_loop(lambda t, c: t < num_steps, step, (tf.constant(0), carry))[1]

    hosted_scan, hosted_repeat = Hosted(scan), Hosted(repeat)

    @tf.function(jit_compile=JIT_COMPILE, autograph=AUTOGRAPH)
    def one_step(carry, data, x):
        return body(carry, data, x)

    def loop_and_args(carry, data, xs, num_steps) -> tuple[Hosted, tuple]:
        if xs is not None:
            return hosted_scan, (carry, data, xs)
        return hosted_repeat, (carry, data, tf.constant(num_steps, tf.int32))

    def run(carry, data, xs=None, num_steps: int | None = None):
        if xs is None and num_steps is None:
            raise ArgumentValueError(
                "run needs xs (inputs stacked per step) or num_steps; both are None"
            )
        if _has_dtensor(carry):
            return _host_loop(one_step, carry, data, xs, num_steps)
        if not tf.executing_eagerly() and kernels.ON_DTENSORS.get():
            # A loop inside a step on DTensors (an ALS half-sweep's loop over row blocks):
            # unrolled into the step, since DTensor's all-reduce combining pass breaks on a
            # `tf.while_loop` there ("operand #0 does not dominate this use", TF 2.21).
            return _host_loop(body, carry, data, xs, num_steps)
        loop, args = loop_and_args(carry, data, xs, num_steps)
        return loop(*args)

    def concrete_function(carry, data, xs=None, num_steps: int | None = None) -> Any:
        """The traced loop a call of `run` with these arguments runs (the XLA program, or the
        host graph of a step with concurrent parts), for tests and inspection; not DTensors."""
        loop, args = loop_and_args(carry, data, xs, num_steps)
        return loop.get_concrete_function(*args)

    run.concrete_function = concrete_function  # type: ignore[attr-defined]
    return run


def vmap(fn: Callable, in_axes: tuple[Any, ...]) -> Callable:
    """`tf.vectorized_map` of `fn` over the leaves `in_axes` marks 0 (see
    `cfcore.backend.capabilities.Capabilities.vmap`); an op it cannot vectorize runs in a
    `while_loop` over the items instead."""

    def mapped(*args: Any) -> Any:
        leaves, rebuild = split_mapped(args, in_axes)
        return tf.vectorized_map(
            lambda items: fn(*rebuild(list(items))), tuple(leaves), fallback_to_while_loop=True
        )

    return mapped


def compile_map(fn: Callable) -> Callable:
    """`run(data, xs, start=0, stop=None) -> ys`: `fn(data, x)` over items `start` to `stop` − 1
    of the leading axis of `xs` (default all), outputs stacked: one XLA `while_loop` calling
    `fn` traced once on one item's specs (a concrete function, which also gives the element
    shapes and dtypes of the `TensorArray`s the loop writes). A range reads the items where
    they are (no copy of the slice)."""

    def mapped(data, xs, start, stop):
        num = stop - start
        # Not item 0 computed before the loop (as this map was first written): that put a second
        # copy of `fn` into the program, and XLA compiled every looped ALS block twice (the
        # first TF sweep at ML-10M shape took 2x JAX's to compile). The loop calls the trace
        # rather than tracing `fn` again: a third of that first sweep was Python tracing.
        item = tf.nest.map_structure(lambda a: tf.TensorSpec(a.shape[1:], a.dtype), xs)
        probe = tf.function(lambda x: fn(data, x), autograph=AUTOGRAPH)
        traced = probe.get_concrete_function(item)
        shapes = traced.structured_outputs
        leaves = tf.nest.flatten(shapes)
        arrays = tuple(tf.TensorArray(t.dtype, size=num, element_shape=t.shape) for t in leaves)

        def step(t, arrays):
            x = tf.nest.map_structure(lambda a: a[t], xs)
            out = tf.nest.flatten(traced(x))
            at = t if start == 0 else t - start
            return t + 1, tuple(a.write(at, o) for a, o in zip(arrays, out, strict=True))

        arrays = tf.while_loop(lambda t, _: t < stop, step, (tf.constant(start), arrays))[1]
        return tf.nest.pack_sequence_as(shapes, [a.stack() for a in arrays])

    compiled = tf.function(mapped, jit_compile=JIT_COMPILE, autograph=AUTOGRAPH)

    def run(data, xs, start: int = 0, stop: int | None = None):
        start, stop = map_range(int(tf.nest.flatten(xs)[0].shape[0]), start, stop)
        if _has_dtensor((data, xs)) or (not tf.executing_eagerly() and kernels.ON_DTENSORS.get()):
            # On DTensors: unrolled, as `compile_loop`'s loops there (see its comments).
            outs = [
                fn(data, tf.nest.map_structure(lambda a, i=i: a[i], xs)) for i in range(start, stop)
            ]
            return tf.nest.map_structure(lambda *ys: tf.stack(ys), *outs)
        return compiled(data, xs, start, stop)

    return run


def _has_dtensor(tree: Any) -> bool:
    if not tf.executing_eagerly():
        # A loop traced inside another compiled function (an ALS half-sweep's loop over row
        # blocks inside the sweep step) is part of that function's program: symbolic tensors,
        # and `is_dtensor` raises once DTensor is initialised in the process. The outer call
        # already chose how to run.
        return False
    return any(
        isinstance(leaf, tf.Tensor) and dtensor.is_dtensor(leaf) for leaf in tf.nest.flatten(tree)
    )


def _host_loop(one_step: Callable, carry: Any, data: Any, xs: Any, num_steps: int | None) -> Any:
    """The steps of a chunk on DTensors (sharded training): a host loop of one compiled step.

    Not one `tf.while_loop`: DTensor (TF 2.21) names the loop functions of each program it
    expands `while_cond`/`while_body`, so a second expansion of a loop (another step count, the
    first call's aliased inputs) can fail to register ("a different function with the same
    name already exists"). A step without a loop expands once per input layout and is reused.
    """
    data = _on_mesh_of(carry, data)
    if xs is None:
        for _ in range(int(num_steps or 0)):
            carry = one_step(carry, data, None)
        return carry
    num = int(tf.nest.flatten(xs)[0].shape[0])
    for t in range(num):
        carry = one_step(carry, data, tf.nest.map_structure(lambda a, t=t: a[t], xs))
    return carry


def _on_mesh_of(carry: Any, data: Any) -> Any:
    """`data` with its plain (non-DTensor) tensors replicated on the mesh of `carry`'s DTensors.

    DTensor (TF 2.21) takes a plain tensor beside DTensors only when it is a scalar or a small
    integer tensor ("got a regular tensor ... but was expecting a DTensor"); the softmax model's
    `log_q` (`[M]` float32, made with `backend.asarray`) rides along with the placed tables so.
    Eagerly, outside the step, once per chunk: O(M) floats copied to each device.
    """
    if not tf.executing_eagerly():
        return data
    placed = [
        leaf
        for leaf in tf.nest.flatten(carry)
        if isinstance(leaf, tf.Tensor) and dtensor.is_dtensor(leaf)
    ]
    if not placed:
        return data
    mesh = dtensor.fetch_layout(placed[0]).mesh

    def replicate(leaf: Any) -> Any:
        if not isinstance(leaf, tf.Tensor) or dtensor.is_dtensor(leaf):
            return leaf
        return dtensor.copy_to_mesh(leaf, kernels.replicated_layout(mesh, leaf.shape.rank))

    return tf.nest.map_structure(replicate, data)


def native_optimizer(optimizer: Any) -> Any:
    """A Keras 3 optimizer (of Keras' TensorFlow backend) as cfcore's pure pair, else None.

    Accepted as is (schedules, `clipnorm`, `weight_decay` of `AdamW`): not cross-backend
    identical (Keras' `Adam` puts ε outside the bias-corrected square root, for instance, and its
    defaults differ from cfcore's pinned `Adam`). The object itself is never changed: each fit
    works on a copy made from its config.

    Raises:
        ValueError: a Keras optimizer of another Keras backend (`KERAS_BACKEND`), or one whose
            config does not rebuild it (an unregistered custom schedule).
    """
    # Keras is imported by whoever built a Keras optimizer: never import it here for nothing.
    keras = sys.modules.get("keras")
    if keras is None or not isinstance(optimizer, keras.optimizers.Optimizer):
        return None
    if keras.backend.backend() != "tensorflow":
        raise ArgumentValueError(
            f"optimizer {optimizer!r} is a Keras optimizer of Keras' {keras.backend.backend()!r} "
            "backend; the 'tf' backend takes Keras optimizers of Keras' 'tensorflow' backend "
            "(KERAS_BACKEND=tensorflow)"
        )
    adapter = _KERAS_ADAPTERS.get(optimizer)
    if adapter is None:
        adapter = _KERAS_ADAPTERS[optimizer] = _KerasOptimizer(optimizer)
    return adapter


class _KerasOptimizer:
    """A stateful Keras 3 optimizer as the pure pair `init` / `update` over tuples of tensors.

    Keras' stateless API refuses its TensorFlow backend, so the state is carried the other way:
    `init` builds a copy of the optimizer on scratch variables shaped like the parameters, and
    `update` writes the carried state into those variables, lets the optimizer apply the
    gradients, and reads the variables back. Inside the trainer's compiled `tf.while_loop`
    (XLA) the writes and reads are ordered resource-variable ops, so the state that leaves a step
    is a tuple of tensors like any other rule's, and the divergence guard can select it.
    """

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer
        # One built copy per parameter layout (names, shapes, dtypes): `update` runs inside a
        # compiled loop, where variables cannot be created, and picks its copy by static shape.
        self._slots: dict[tuple, tuple[Any, dict[str, Any]]] = {}

    @staticmethod
    def _layout(params: dict[str, Any]) -> tuple:
        return tuple((k, tuple(p.shape), tf.as_dtype(p.dtype).name) for k, p in params.items())

    def init(self, params: dict[str, Any]) -> tuple:
        """The optimizer's variables after building it on `params`, as a tuple of tensors.

        Called eagerly (the trainer initialises outside its compiled loops).
        """
        import keras

        layout = self._layout(params)
        if layout not in self._slots:
            try:
                opt = type(self.optimizer).from_config(self.optimizer.get_config())
            except Exception as err:  # noqa: BLE001 (Keras raises many kinds; all mean the same)
                raise ArgumentValueError(
                    f"cannot copy the Keras optimizer {self.optimizer!r} from its config ({err}); "
                    "register custom schedules with keras.saving.register_keras_serializable"
                ) from err
            # Named after the parameters, so `exclude_from_weight_decay(var_names=...)` works.
            scratch = {k: keras.Variable(p, trainable=True, name=k) for k, p in params.items()}
            opt.build(list(scratch.values()))
            self._slots[layout] = (opt, scratch)
        opt, _ = self._slots[layout]
        # A fresh state every fit: zero slots, iteration 0, the configured learning rate.
        fresh = type(self.optimizer).from_config(self.optimizer.get_config())
        fresh.build([keras.Variable(p, name=k) for k, p in params.items()])
        return tuple(_read(v) for v in fresh.variables)

    def update(self, grads: dict[str, Any], state: tuple, params: dict[str, Any]) -> tuple:
        """`(new_params, new_state)`: one `apply_gradients` of the copy, from `state`."""
        opt, scratch = self._slots[self._layout(params)]
        for var, value in zip(opt.variables, state, strict=True):
            var.assign(value)
        for k, var in scratch.items():
            var.assign(params[k])
        opt.apply_gradients([(grads[k], scratch[k]) for k in scratch])
        return {k: _read(v) for k, v in scratch.items()}, tuple(_read(v) for v in opt.variables)


def _read(var: Any) -> tf.Tensor:
    # A tensor of the variable's value now (not a handle that later assigns would change).
    return tf.identity(var.value.read_value())


_KERAS_ADAPTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
