"""Overhead of cfcore's training step against a hand-written compiled step of the same math.

Full-batch regularized MF on ml-100k (90% train split), both MSE forms, each backend. For each
configuration the hand-written step and cfcore's are timed in alternation (same process, same
warm caches), so their ratio is meaningful on a shared, noisy machine. cfcore is timed two ways:
its single compiled step called from Python (`cfcore.train.make_step`), and its chunked loop
(`cfcore.train.make_chunk` as `fit` runs it: `eval_every` guarded steps inside one compiled loop,
the divergence flag read after each), per step.

    python benchmarks/overhead.py [--backends jax tf] [--steps 50] [--repeats 7] [--dim 30]

Writes `benchmarks/results/overhead.md`.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import DATA_DIR, CfcoreTraining, stamp, write_result

import cfcore
from cfcore.data.ratings import Batch
from cfcore.init import init_mf_params
from cfcore.optimizers import SGD

LR, REG, GRAV = 20.0, 0.1, 1.0


def hand_written_jax(params, data, method):
    import jax
    import jax.numpy as jnp

    n_u, n_i = params["user"].shape[0], params["item"].shape[0]

    def loss(U, V, users, items, r):
        if method == "dense":
            pred = (U @ V.T)[users, items]
        else:
            pred = jnp.sum(U[users] * V[items], axis=1)
        mse = jnp.mean((pred - r) ** 2)
        reg = REG * (jnp.sum(U * U) / n_u + jnp.sum(V * V) / n_i)
        grav = GRAV * jnp.sum((U.T @ U) * (V.T @ V)) / (n_u * n_i)
        return mse + reg + grav

    @jax.jit
    def step(U, V, users, items, r):
        gU, gV = jax.grad(loss, argnums=(0, 1))(U, V, users, items, r)
        return U - LR * gU, V - LR * gV

    args = [jnp.asarray(a) for a in (data.users, data.items, data.values)]
    state = [jnp.asarray(params["user"]), jnp.asarray(params["item"])]

    def run(k):
        nonlocal state
        for _ in range(k):
            state = list(step(*state, *args))
        state[0].block_until_ready()

    return run


def hand_written_tf(params, data, method, jit):
    import tensorflow as tf

    U = tf.Variable(params["user"])
    V = tf.Variable(params["item"])
    users, items, r = (tf.constant(a) for a in (data.users, data.items, data.values))
    n_u, n_i = float(U.shape[0]), float(V.shape[0])

    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape() as tape:
            if method == "dense":
                pred = tf.gather_nd(tf.matmul(U, V, transpose_b=True), tf.stack([users, items], 1))
            else:
                pred = tf.reduce_sum(tf.gather(U, users) * tf.gather(V, items), axis=1)
            mse = tf.reduce_mean(tf.square(pred - r))
            reg = REG * (tf.reduce_sum(U * U) / n_u + tf.reduce_sum(V * V) / n_i)
            grav = (
                GRAV
                * tf.reduce_sum(
                    tf.matmul(U, U, transpose_a=True) * tf.matmul(V, V, transpose_a=True)
                )
                / (n_u * n_i)
            )
            loss = mse + reg + grav
        gU, gV = tape.gradient(loss, [U, V])
        U.assign_sub(LR * tf.convert_to_tensor(gU))
        V.assign_sub(LR * tf.convert_to_tensor(gV))

    def run(k):
        for _ in range(k):
            step()
        U.numpy()

    return run


def hand_written_tf_functional(params, data, method):
    """The same TF step written functionally (parameters in, new parameters out), like cfcore's."""
    import tensorflow as tf

    users, items, r = (tf.constant(a) for a in (data.users, data.items, data.values))
    n_u, n_i = float(params["user"].shape[0]), float(params["item"].shape[0])

    @tf.function(jit_compile=True)
    def step(U, V):
        with tf.GradientTape() as tape:
            tape.watch([U, V])
            if method == "dense":
                pred = tf.gather_nd(tf.matmul(U, V, transpose_b=True), tf.stack([users, items], 1))
            else:
                pred = tf.reduce_sum(tf.gather(U, users) * tf.gather(V, items), axis=1)
            mse = tf.reduce_mean(tf.square(pred - r))
            reg = REG * (tf.reduce_sum(U * U) / n_u + tf.reduce_sum(V * V) / n_i)
            gram = tf.matmul(U, U, transpose_a=True) * tf.matmul(V, V, transpose_a=True)
            loss = mse + reg + GRAV * tf.reduce_sum(gram) / (n_u * n_i)
        gU, gV = tape.gradient(loss, [U, V])
        return U - LR * tf.convert_to_tensor(gU), V - LR * tf.convert_to_tensor(gV)

    state = [tf.constant(params["user"]), tf.constant(params["item"])]

    def run(k):
        nonlocal state
        for _ in range(k):
            state = list(step(*state))
        state[0].numpy()

    return run


def cfcore_runs(backend, params, data, method):
    spec = cfcore.MFSpec(embedding_dim=params["user"].shape[1], init_stddev=0.05, mse=method,
                         regularization_coeff=REG, gravity_coeff=GRAV)  # fmt: skip
    train = CfcoreTraining(backend, spec, SGD(LR), params, data)

    def run_step(k):
        train.steps(k)
        train.sync()

    def run_chunk(k, eval_every=10):
        for _ in range(k // eval_every):
            train.chunk(eval_every)  # reads the divergence flag after every chunk, as fit does
        train.sync()

    return run_step, run_chunk


def time_ms(run, steps):
    t = time.perf_counter()
    run(steps)
    return (time.perf_counter() - t) * 1000 / steps


def measure(runners: dict, steps: int, repeats: int) -> dict:
    out = {}
    for name, run in runners.items():  # compile + warm up
        t = time.perf_counter()
        run(10)
        out[name] = {"first_10_s": time.perf_counter() - t, "ms": []}
    for _ in range(repeats):  # alternate so drift hits every contender alike
        for name, run in runners.items():
            out[name]["ms"].append(time_ms(run, steps))
    return {
        k: {"first_10_s": v["first_10_s"], "ms": statistics.median(v["ms"])} for k, v in out.items()
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backends", nargs="+", default=["jax", "tf"])
    p.add_argument("--methods", nargs="+", default=["dense", "gather"])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--dim", type=int, default=30)
    p.add_argument("--quick", action="store_true", help="20 steps x 3 repeats")
    p.add_argument("--smoke", action="store_true", help="2 steps x 1 repeat, gather only (tests)")
    p.add_argument(
        "--out-dir", default=None, help="where to write overhead.md (default benchmarks/results)"
    )
    args = p.parse_args()
    if args.quick:
        args.steps, args.repeats = 20, 3
    if args.smoke:
        args.steps, args.repeats, args.methods = 2, 1, ["gather"]
    ratings = cfcore.datasets.load_movielens("100k", data_dir=DATA_DIR).ratings
    train, _ = ratings.split(0.1, seed=0)
    spec = cfcore.MFSpec(embedding_dim=args.dim, init_stddev=0.05)
    params = init_mf_params(spec, train.num_users, train.num_items, seed=0)
    data = Batch.from_ratings(train)
    rows = []
    for be_name in args.backends:
        be = cfcore.get_backend(be_name)
        for method in args.methods:
            runners = {}
            if be_name == "jax":
                runners["hand-written jax.jit"] = hand_written_jax(params, data, method)
                ref_name = "hand-written jax.jit"
            else:
                runners["hand-written tf.function"] = hand_written_tf(
                    params, data, method, jit=False
                )
                runners["hand-written tf.function(jit_compile=True)"] = hand_written_tf(
                    params, data, method, jit=True
                )
                runners["hand-written tf.function(jit_compile=True), functional"] = (
                    hand_written_tf_functional(params, data, method)
                )
                ref_name = "hand-written tf.function(jit_compile=True)"
            runners["cfcore make_step"], runners["cfcore fit loop (chunks of 10)"] = cfcore_runs(
                be, params, data, method
            )
            res = measure(runners, args.steps, args.repeats)
            base = res[ref_name]["ms"]
            for name, r in res.items():
                rows.append((be_name, method, name, r["ms"], r["ms"] / base, r["first_10_s"]))
                print(
                    f"{be_name:4} {method:6} {name:45} {r['ms']:8.2f} ms/step  x{r['ms'] / base:.2f}  (first 10 steps {r['first_10_s']:.2f} s)",
                    flush=True,
                )
    lines = [
        "| backend | MSE form | implementation | ms / step | × hand-written (same compile mode) | first 10 steps incl. compile (s) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {b} | {m} | {n} | {ms:.2f} | {ratio:.2f} | {c:.2f} |" for b, m, n, ms, ratio, c in rows
    ]
    text = (
        "# cfcore step overhead vs a hand-written step\n\n"
        f"Full-batch regularized MF (d={args.dim}, λr={REG}, λg={GRAV}, SGD lr {LR}) on ml-100k's 90,000 "
        f"training ratings. Median of {args.repeats} repeats of {args.steps} steps, contenders alternated. "
        "Target: cfcore ≤ 1.10× the hand-written step of the same framework and compile mode.\n\n"
        + "\n".join(lines)
        + f"\n\n{stamp()}\n"
    )
    print("wrote", write_result("overhead.md", text, args.out_dir))


if __name__ == "__main__":
    main()
