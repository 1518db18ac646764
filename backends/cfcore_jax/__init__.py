"""The JAX backend of cfcore: the operations of `cfcore.backend.protocol.Backend` on jax.

Importing this module imports jax; `cfcore` itself never does. Select it with `backend="jax"`.

The gather form of `pair_dot` has two kernels: the plain gathers (`kernels.pair_dot`) and the
segment-layout kernel (`pair_kernel`), which needs a layout precomputed once per training set
(`pair_layout`) and is several times faster on XLA:CPU. Which one full-batch training uses is
`JaxBackend(pair_kernel=...)`, else the environment variable `CFCORE_JAX_PAIR_KERNEL`: "segment",
"gather", or "auto" (the default: segment on the CPU, the plain gathers on other platforms, where
it has not been measured to win).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cfcore.backend import compilation_cache
from cfcore.errors import ArgumentValueError

from . import kernels, ops, pair_kernel, sharding, transforms

PAIR_KERNEL_ENV = "CFCORE_JAX_PAIR_KERNEL"
PAIR_KERNELS = ("auto", "segment", "gather")

# The plain kernels; `JaxBackend.pair_dot`, `gramian`, `bag_of_words` and the softmax losses
# pick the sharded forms inside a sharded step (`sharding.JaxRowSharding.scope`).
_pair_dot = jax.jit(kernels.pair_dot, static_argnames="method")
_gramian = jax.jit(kernels.gramian)
_bag_of_words = jax.jit(kernels.bag_of_words, static_argnames="combiner")
_softmax_cross_entropy = jax.jit(kernels.softmax_cross_entropy)
_sampled_softmax_loss = jax.jit(
    kernels.sampled_softmax_loss, static_argnames="remove_accidental_hits"
)

_DTYPES = {"float32": jnp.float32, "int32": jnp.int32, "bool": jnp.bool_, None: None}
_NARROW = {np.dtype(np.float64): jnp.float32, np.dtype(np.int64): jnp.int32}


def use_compilation_cache(base: Any, stacklevel: int = 2) -> None:
    """Puts JAX's persistent compilation cache in a subfolder of `base`
    (`cfcore.enable_compilation_cache`), checked first (`compilation_cache.prepare`), every
    program in it however quickly it compiled (JAX's default keeps only those over 1 s: a cold
    ALS fit on ml-100k compiles about ten programs, most under that). None: no cache."""
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    if not compilation_cache.chosen() and getattr(jax.config, "jax_compilation_cache_dir", None):
        return  # the default leaves a cache the user gave JAX itself alone
    prepared = None
    if base is not None:
        version = jax.__version__
        prepared = compilation_cache.prepare(
            base, "jax", version, check=_whole_entry, stacklevel=stacklevel + 1
        )
    jax_cache.reset_cache()  # JAX opens its cache folder once: a new one needs a reset
    if prepared is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(prepared.folder))
    # A folder that takes no new entries (read-only, full) is read only: JAX then writes only
    # programs that took longer than this to compile, that is none.
    never = float(2**31)
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs", 0.0 if prepared.writable else never
    )


def _whole_entry(data: bytes) -> None:
    # JAX writes an entry in place (no rename): one still being written by another process is
    # a compressed stream cut short, which decompression refuses (zlib and zstd end-of-stream).
    try:
        from jax._src.compilation_cache import decompress_executable  # private: best effort
    except ImportError:
        return
    decompress_executable(data)


# On by default (`compilation_cache.folder`: the user's cache folder unless turned off).
_cache = compilation_cache.folder()
if _cache is not None:
    use_compilation_cache(_cache)


class JaxBackend:
    """cfcore's `Backend` on jax.jit and jax.numpy."""

    name = "jax"
    xp = ops

    def __init__(self, pair_kernel: str | None = None) -> None:
        """Args: pair_kernel: "auto", "segment", "gather", or None (`$CFCORE_JAX_PAIR_KERNEL`)."""
        if pair_kernel is not None:
            _check_pair_kernel(pair_kernel, "pair_kernel")
        self._pair_kernel = pair_kernel

    def gather_kernel(self) -> str:
        """The gather kernel full-batch training uses here: "segment" or "gather"."""
        choice = self._pair_kernel
        if choice is None:
            choice = _check_pair_kernel(os.environ.get(PAIR_KERNEL_ENV, "auto"), PAIR_KERNEL_ENV)
        if choice == "auto":
            # Measured faster on XLA:CPU only; elsewhere the plain gathers until measured.
            choice = "segment" if jax.default_backend() == "cpu" else "gather"
        return choice

    @staticmethod
    def is_available() -> bool:
        # optax is needed only for optax optimizers (`native_optimizer`), imported then.
        return importlib.util.find_spec("jax") is not None

    def asarray(self, x: Any, dtype: str | None = None) -> jax.Array:
        if dtype is None and isinstance(x, np.ndarray | np.generic | float | int | bool):
            x = np.asarray(x)
            return jnp.asarray(x, _NARROW.get(x.dtype, x.dtype))
        return jnp.asarray(x, _DTYPES[dtype])

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def sync(self, tree: Any) -> Any:
        return jax.block_until_ready(tree)

    @staticmethod
    def pair_dot(user_emb, item_emb, users, items, method: str = "gather", layout=None):
        mesh = sharding.active_mesh()
        if mesh is not None and method == "gather" and layout is None:
            # Traced inside a sharded step: gather the pairs' rows where they live.
            return sharding.pair_dot(mesh, user_emb, item_emb, users, items)
        return _pair_dot(user_emb, item_emb, users, items, method=method, layout=layout)

    def pair_layout(self, users: Any, items: Any, num_users: int, num_items: int) -> Any:
        if self.gather_kernel() != "segment" or np.shape(users)[0] == 0:
            return None
        layout = pair_kernel.make_pair_layout(
            np.asarray(users), np.asarray(items), num_users, num_items
        )
        return jax.device_put(layout)

    @staticmethod
    def gramian(x):
        mesh = sharding.active_mesh()
        if mesh is not None:
            # Traced inside a sharded step: per-shard Gramians summed by one all-reduce.
            return sharding.gramian(mesh, x)
        return _gramian(x)

    segment_sum = staticmethod(jax.jit(kernels.segment_sum, static_argnames="num_segments"))

    @staticmethod
    def bag_of_words(table, ids, weights, combiner: str = "mean"):
        mesh = sharding.active_mesh()
        if mesh is not None:  # traced inside a sharded step: the bags' rows where they live
            return sharding.bag_of_words(mesh, table, ids, weights, combiner)
        return _bag_of_words(table, ids, weights, combiner=combiner)

    @staticmethod
    def softmax_cross_entropy(query_emb, item_emb, labels):
        mesh = sharding.active_mesh()
        if mesh is not None:
            return sharding.softmax_cross_entropy(mesh, query_emb, item_emb, labels)
        return _softmax_cross_entropy(query_emb, item_emb, labels)

    @staticmethod
    def sampled_softmax_loss(query_emb, item_emb, labels, log_q=None, remove_accidental_hits=True):
        mesh = sharding.active_mesh()
        if mesh is not None:
            return sharding.sampled_softmax_loss(
                mesh, query_emb, item_emb, labels, log_q, remove_accidental_hits
            )
        return _sampled_softmax_loss(
            query_emb, item_emb, labels, log_q, remove_accidental_hits=remove_accidental_hits
        )

    top_k = staticmethod(jax.jit(kernels.top_k, static_argnames="k"))
    solve = staticmethod(jax.jit(kernels.solve))

    value_and_grad = staticmethod(transforms.value_and_grad)
    compile = staticmethod(transforms.compile)
    compile_loop = staticmethod(transforms.compile_loop)
    native_optimizer = staticmethod(transforms.native_optimizer)
    compile_map = staticmethod(transforms.compile_map)  # optional: `cfcore.backend.capabilities`
    vmap = staticmethod(transforms.vmap)
    # Optional (not Protocol members): `fit(..., devices=...)` asks for the first, and
    # `cfcore.eval.agreement.strict_float32` calls the second.
    row_sharding = staticmethod(sharding.row_sharding)
    strict_float32 = staticmethod(ops.strict_float32)

    def __repr__(self) -> str:
        return f"JaxBackend(jax {jax.__version__}, devices={[d.platform for d in jax.devices()]})"


def _check_pair_kernel(value: str, what: str) -> str:
    if value not in PAIR_KERNELS:
        raise ArgumentValueError(f"{what} must be one of {', '.join(PAIR_KERNELS)}; got {value!r}")
    return value


backend = JaxBackend()
