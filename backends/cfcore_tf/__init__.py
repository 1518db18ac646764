"""The TensorFlow 2 backend of cfcore: the operations of `cfcore.backend.protocol.Backend`.

Importing this module imports tensorflow; `cfcore` itself never does. Select it with `backend="tf"`.
Compiled functions use XLA (`jit_compile=True`); no tf.compat.v1. One XLA:CPU program runs on one
core: a large ALS half-sweep is cut into concurrent parts, XLA calls that a non-XLA graph runs at
once on TensorFlow's inter-op threads (`transforms.compile_parts`; `TFBackend(parts=...)`).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

# Quiets TensorFlow's C++ warnings (users can still raise the level).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cfcore.backend import compilation_cache  # noqa: E402
from cfcore.errors import ArgumentValueError  # noqa: E402

from . import kernels, ops, sharding, transforms  # noqa: E402

_DTYPES = {"float32": tf.float32, "int32": tf.int32, "bool": tf.bool}
_NARROW = {np.dtype(np.float64): np.dtype(np.float32), np.dtype(np.int64): np.dtype(np.int32)}


def use_compilation_cache(base: Any, stacklevel: int = 2) -> None:
    """Puts XLA's persistent compilation cache in a subfolder of `base`
    (`cfcore.enable_compilation_cache`), checked first (`compilation_cache.prepare`: TensorFlow
    fails on a damaged entry or a write it cannot make). None: no cache.

    TensorFlow reads its XLA flags (`TF_XLA_FLAGS`) once, when it first lists its devices: until
    then the flags are set; after that this only warns.
    """
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if not compilation_cache.chosen() and compilation_cache.TF_FLAG in flags:
        return  # the default leaves a cache the user gave TensorFlow itself alone
    if _devices_listed():
        had = any(f.startswith(compilation_cache.TF_FLAG + "=") for f in flags.split())
        wanted = None if base is None else compilation_cache.subfolder(base, "tf", tf.__version__)
        if base is not None and f"{compilation_cache.TF_FLAG}={wanted}" in flags.split():
            return  # already in force
        # The default stays silent: only a cache (or no cache) asked for is worth a warning.
        if compilation_cache.chosen() and (base is not None or had):
            compilation_cache.warn_tf_started(wanted, stacklevel=stacklevel + 1)
        return
    prepared = None
    if base is not None:
        prepared = compilation_cache.prepare(base, "tf", tf.__version__, stacklevel=stacklevel + 1)
    if prepared is None:
        os.environ["TF_XLA_FLAGS"] = compilation_cache.tf_xla_flags(flags, None)
    else:
        os.environ["TF_XLA_FLAGS"] = compilation_cache.tf_xla_flags(
            flags, prepared.folder, read_only=not prepared.writable
        )


def _devices_listed() -> bool:
    # Private state of TensorFlow's: without it, count the devices as listed (refuse, and say so).
    from tensorflow.python.eager import context

    return getattr(context.context(), "_physical_devices", True) is not None


# Importing TensorFlow does not read the XLA flags yet: a cache asked for before this import (or
# by `$CFCORE_COMPILATION_CACHE`) still applies, unless TensorFlow has listed its devices already.
_cache = compilation_cache.folder()
if _cache is not None:
    use_compilation_cache(_cache)


def _native(x: Any) -> Any:
    # NumPy input is narrowed as the contract says (float64 -> float32, int64 -> int32).
    if isinstance(x, np.ndarray | np.generic):
        x = np.asarray(x)  # a NumPy scalar becomes a 0-d array, which TensorFlow takes as one
        return tf.convert_to_tensor(x.astype(_NARROW[x.dtype]) if x.dtype in _NARROW else x)
    return x


def _compiled(fn: Any, jit: bool = True) -> Any:
    compiled = tf.function(
        fn,
        jit_compile=transforms.JIT_COMPILE and jit,
        reduce_retracing=True,
        autograph=transforms.AUTOGRAPH,
    )

    # In a host graph (concurrent parts: `transforms.compile_parts`) the kernel is an XLA call
    # of its own, with static shapes (the step's), as the rest of the program would have been.
    hosted = tf.function(fn, jit_compile=transforms.JIT_COMPILE and jit, autograph=False)

    def call(*args: Any, **kwargs: Any) -> Any:
        if not tf.executing_eagerly():
            if transforms.in_host_graph():
                return hosted(*args, **kwargs)
            # Already inside a compiled function (a training loop): inline the kernel, so that
            # XLA sees one program (and the gradients of its gathers get static shapes).
            return fn(*args, **kwargs)
        return compiled(*map(_native, args), **{k: _native(v) for k, v in kwargs.items()})

    call.__doc__ = fn.__doc__
    return call


class TFBackend:
    """cfcore's `Backend` on TensorFlow 2.

    Args:
        parts: how many concurrent parts an ALS half-sweep on one device is cut into
            (`compile_parts`): None (the default) for as many as the CPU cores TensorFlow uses
            (`transforms.default_parts`), 1 for one XLA program per chunk of sweeps. Small
            half-sweeps get fewer (`cfcore.maths.als.MIN_PART_WORK`).

    Example:
        >>> from cfcore_tf import TFBackend
        >>> model.fit(ratings, steps=10, backend=TFBackend(parts=1))  # doctest: +SKIP
    """

    name = "tf"
    xp = ops

    def __init__(self, parts: int | None = None) -> None:
        if parts is not None and (
            isinstance(parts, bool) or not isinstance(parts, int | np.integer) or parts < 1
        ):
            raise ArgumentValueError(
                f"parts must be None (as many as the CPU cores) or an int >= 1, got {parts!r}"
            )
        self.parts = None if parts is None else int(parts)

    def concurrent_parts(self) -> int:
        """How many parts `compile_parts` runs at once in the code traced now (optional member,
        `cfcore.backend.capabilities`): `parts` in a loop of steps that holds them, else 1."""
        return transforms.concurrent_parts(self.parts)

    @staticmethod
    def is_available() -> bool:
        return importlib.util.find_spec("tensorflow") is not None

    def asarray(self, x: Any, dtype: str | None = None) -> tf.Tensor:
        if dtype is not None:
            if isinstance(x, tf.Tensor):
                return tf.cast(x, _DTYPES[dtype])
            return tf.convert_to_tensor(np.asarray(x, dtype))
        if isinstance(x, tf.Tensor):
            return x
        return _native(np.asarray(x))

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.numpy() if isinstance(x, tf.Tensor | tf.Variable) else np.asarray(x)

    def sync(self, tree: Any) -> Any:
        # .numpy() of one element of each array waits for its producer.
        for leaf in tf.nest.flatten(tree):
            if isinstance(leaf, tf.Tensor):
                tf.reshape(leaf, [-1])[:1].numpy()
        return tree

    pair_dot = staticmethod(_compiled(kernels.pair_dot))

    gramian = staticmethod(_compiled(kernels.gramian))
    segment_sum = staticmethod(_compiled(kernels.segment_sum))
    bag_of_words = staticmethod(_compiled(kernels.bag_of_words))
    softmax_cross_entropy = staticmethod(_compiled(kernels.softmax_cross_entropy))
    sampled_softmax_loss = staticmethod(_compiled(kernels.sampled_softmax_loss))
    # top_k outside XLA: its tie order (lowest index first) is documented for the TF kernel.
    top_k = staticmethod(_compiled(kernels.top_k, jit=False))
    solve = staticmethod(_compiled(kernels.solve))

    value_and_grad = staticmethod(transforms.value_and_grad)
    compile = staticmethod(transforms.compile)
    compile_loop = staticmethod(transforms.compile_loop)
    vmap = staticmethod(transforms.vmap)  # optional: `cfcore.backend.capabilities`
    # Optional members (`cfcore.backend.capabilities`). No pair_layout: XLA under tf.function
    # already fuses the gathers of pair_dot, so there is nothing to precompute.
    compile_map = staticmethod(transforms.compile_map)
    compile_parts = staticmethod(transforms.compile_parts)  # with `concurrent_parts`
    native_optimizer = staticmethod(transforms.native_optimizer)
    row_sharding = staticmethod(sharding.row_sharding)
    strict_float32 = staticmethod(ops.strict_float32)

    def __repr__(self) -> str:
        parts = "" if self.parts is None else f", parts={self.parts}"
        return f"TFBackend(tensorflow {tf.__version__}{parts})"


backend = TFBackend()
