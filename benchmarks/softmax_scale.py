"""Full vs sampled softmax as the catalogue grows: time per step on each backend.

For each catalogue size M (synthetic items), a batch of B queries of dimension d and B labels drawn
from a Zipf(1.1) popularity over the items (so that in-batch duplicates, the accidental hits,
occur as in real data), times the compiled

* loss: the mean cross-entropy, full (`[B, M]` logits) or sampled (in-batch negatives, `[B, B]`
  logits, logQ correction, accidental hits removed);
* loss + gradients: with the gradients for the queries `[B, d]` and the item table `[M, d]`, as
  the training chunk computes them (dense: it applies a dense Adagrad update).

Each timing is the median over repeats after a first call (reported apart, as compile time), with a
host sync (`block_until_ready()` / `.numpy()`) before the clock stops. The full softmax needs
about 3·B·M·4 bytes (logits, probabilities, their gradient); where that exceeds `--max-memory` of
the available memory it is not run at batch B but at a batch small enough, and the B-batch time is
extrapolated linearly (the work is linear in B), marked as such. Writes `softmax_scale.md` into
`--out-dir` (default `benchmarks/results/`).

    python benchmarks/softmax_scale.py [--sizes 1682 100000 1000000] [--batch 1024] [--dim 64]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import RESULTS, stamp

from cfcore.io.atomic import atomic_write


def zipf_labels(rng: np.random.Generator, num_items: int, batch: int, a: float = 1.1):
    """Labels drawn from p(j) ∝ 1/(j+1)^a, and log p: `([B] int32, [M] float32)`."""
    p = 1.0 / np.arange(1, num_items + 1) ** a
    p /= p.sum()
    labels = rng.choice(num_items, size=batch, p=p).astype(np.int32)
    return labels, np.log(p).astype(np.float32)


def jax_fns(loss: str):
    import jax
    import jax.numpy as jnp
    from cfcore_jax import kernels as softmax

    def value(q, v, labels, log_q):
        if loss == "full":
            return softmax.softmax_cross_entropy(q, v, labels)
        return softmax.sampled_softmax_loss(q, v, labels, log_q)

    fwd = jax.jit(value)
    both = jax.jit(jax.value_and_grad(value, argnums=(0, 1)))

    def convert(*arrays):
        return [jnp.asarray(a) for a in arrays]

    def sync(out):
        jax.block_until_ready(out)

    return fwd, both, convert, sync


def tf_fns(loss: str):
    import tensorflow as tf
    from cfcore_tf import kernels as softmax

    def value(q, v, labels, log_q):
        if loss == "full":
            return softmax.softmax_cross_entropy(q, v, labels)
        return softmax.sampled_softmax_loss(q, v, labels, log_q)

    @tf.function(jit_compile=True)
    def fwd(q, v, labels, log_q):
        return value(q, v, labels, log_q)

    @tf.function(jit_compile=True)
    def both(q, v, labels, log_q):
        with tf.GradientTape() as tape:
            tape.watch([q, v])
            out = value(q, v, labels, log_q)
        gq, gv = tape.gradient(out, [q, v])
        return out, (gq, tf.convert_to_tensor(gv))  # dense, as the training chunk uses it

    def convert(*arrays):
        return [tf.convert_to_tensor(a) for a in arrays]

    def sync(out):
        tf.nest.map_structure(lambda t: t.numpy(), out)

    return fwd, both, convert, sync


def timed(fn, args, sync, min_seconds: float, max_repeats: int) -> tuple[float, float]:
    """(first call in s, median of later calls in ms)."""
    t0 = time.perf_counter()
    sync(fn(*args))
    first = time.perf_counter() - t0
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (
        time.perf_counter() - start < min_seconds and len(times) < max_repeats
    ):
        t0 = time.perf_counter()
        sync(fn(*args))
        times.append((time.perf_counter() - t0) * 1000)
    return first, statistics.median(times)


def available_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", nargs="+", type=int, default=[1682, 100_000, 1_000_000])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--backends", nargs="+", default=["jax", "tf"])
    p.add_argument("--max-memory", type=float, default=0.25, help="share of available memory")
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--max-repeats", type=int, default=20)
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--out", default="softmax_scale.md")
    args = p.parse_args()
    makers = {"jax": jax_fns, "tf": tf_fns}
    rows = []
    for m in args.sizes:
        rng = np.random.default_rng(0)
        items = (rng.normal(size=(m, args.dim)) * 0.05).astype(np.float32)
        for backend in args.backends:
            for loss in ("full", "sampled"):
                batch = args.batch
                note = ""
                if loss == "full":
                    need = 3 * batch * m * 4
                    budget = args.max_memory * available_bytes()
                    while batch > 8 and 3 * batch * m * 4 > budget:
                        batch //= 2
                    if batch != args.batch:
                        note = (
                            f"B={args.batch} needs ~{need / 2**30:.1f} GiB; run at B={batch}, "
                            f"times x{args.batch // batch} (linear in B)"
                        )
                q_rng = np.random.default_rng(1)
                query = (q_rng.normal(size=(batch, args.dim)) * 0.05).astype(np.float32)
                labels, log_q = zipf_labels(q_rng, m, batch)
                fwd, both, convert, sync = makers[backend](loss)
                inputs = convert(query, items, labels, log_q)
                compile_fwd, ms_fwd = timed(fwd, inputs, sync, args.min_seconds, args.max_repeats)
                compile_both, ms_both = timed(
                    both, inputs, sync, args.min_seconds, args.max_repeats
                )
                scale = args.batch / batch
                row = {
                    "items": m,
                    "backend": backend,
                    "loss": loss,
                    "loss ms": ms_fwd * scale,
                    "loss+grad ms": ms_both * scale,
                    "first call s (loss, loss+grad)": f"{compile_fwd:.2f}, {compile_both:.2f}",
                    "accidental hits": int(batch - len(np.unique(labels)))
                    if loss == "sampled"
                    else "",
                    "note": note,
                }
                rows.append(row)
                print(row, flush=True)
                del inputs
    df = pd.DataFrame(rows)
    text = f"""# Full vs sampled softmax as the catalogue grows

Batch B = {args.batch} queries, d = {args.dim}, labels from a Zipf(1.1) popularity over M synthetic
items; compiled (`jax.jit`, `tf.function(jit_compile=True)`), median ms per call after the first
call. "loss" is the forward mean cross-entropy; "loss+grad" adds the gradients for the queries and
the dense `[M, d]` item table. The full softmax forms `[B, M]` logits (O(B·M·d) work and O(B·M)
memory); the sampled one scores the batch's own labels (`[B, B]`), subtracts log Q and drops
accidental hits ("accidental hits": in-batch duplicates of a label), so its loss costs O(B²·d)
whatever M, and its gradient only adds the O(M·d) dense item gradient.

{df.to_markdown(index=False, floatfmt=".2f")}

{stamp()}
"""
    path = args.out_dir / args.out
    atomic_write(path, lambda f: f.write_text(text))
    print(text)
    print("wrote", path)


if __name__ == "__main__":
    main()
