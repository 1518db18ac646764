"""Fused kernels of the torch backend (contracts in `cfcore.backend.protocol`).

Inputs are float32 / int32 tensors (`TorchBackend` converts NumPy input first). Row gathers use
`torch.nn.functional.embedding`: about 2x faster than index gathers in its backward pass, and its
gradient is dense.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ROW_CHUNK_FLOATS = 1 << 22
"""Floats of the `[c, d]` gathers of one chunk of observations in the gather forms of
`row_dots` and `row_sums` (16 MB a model), so that their memory stays bounded at any size."""


def _chunks(n: int, d: int) -> list[slice]:
    step = max(1, ROW_CHUNK_FLOATS // max(int(d), 1))
    return [slice(a, min(a + step, n)) for a in range(0, n, step)] or [slice(0, 0)]


def pair_dot(user_emb, item_emb, users, items, method: str = "gather", chunked: bool = True):
    """`⟨U[users[k]], V[items[k]]⟩` for each observed pair: `[n]` float32.

    `chunked`: where no gradient is taken (an objective evaluated for the history), the
    gathers run a chunk of pairs at a time (`ROW_CHUNK_FLOATS`), not as two `[n, d]` blocks
    (5 GB at 10M pairs, d 64)."""
    if method == "dense":
        return torch.matmul(user_emb, item_emb.mT)[users, items]
    n, d = int(users.shape[0]), int(user_emb.shape[-1])
    grad = torch.is_grad_enabled() and (user_emb.requires_grad or item_emb.requires_grad)
    if chunked and not grad and n * d > ROW_CHUNK_FLOATS:
        return torch.cat(
            [
                torch.sum(F.embedding(users[c], user_emb) * F.embedding(items[c], item_emb), 1)
                for c in _chunks(n, d)
            ]
        )
    return torch.sum(F.embedding(users, user_emb) * F.embedding(items, item_emb), dim=1)


def gramian(x):
    """`xᵀx`: `[d, d]` for `[n, d]`."""
    return torch.matmul(x.mT, x)


def segment_sum(data, segment_ids, num_segments: int):
    """Row sums per segment: `[S, ...]`, zero for an empty segment."""
    out = data.new_zeros((int(num_segments), *data.shape[1:]))
    return out.index_add(0, segment_ids, data)  # out of place: differentiable in `data`


def bag_of_words(table, ids, weights, combiner: str = "mean"):
    """Weighted bags of `table` rows: `[B, d]` (`ids` None: dense `[B, V]` weights)."""
    if ids is None:
        total = torch.matmul(weights, table)
    else:
        total = torch.einsum("...l,...ld->...d", weights, F.embedding(ids, table))
    if combiner == "sum":
        return total
    count = torch.sum(weights, dim=-1, keepdim=True)
    return total / torch.where(count > 0, count, 1.0)


def softmax_cross_entropy(query_emb, item_emb, labels):
    """Mean full-softmax cross-entropy: scalar."""
    logits = torch.matmul(query_emb, item_emb.mT)
    picked = torch.gather(logits, 1, labels.long()[:, None])[:, 0]
    return torch.mean(torch.logsumexp(logits, dim=1) - picked)


def sampled_softmax_loss(query_emb, item_emb, labels, log_q=None, remove_accidental_hits=True):
    """Mean in-batch sampled-softmax cross-entropy: scalar (`log_q` is `[M]`, per item)."""
    logits = torch.matmul(query_emb, F.embedding(labels, item_emb).mT)
    if log_q is not None:
        logits = logits - torch.index_select(log_q, 0, labels)[None, :]
    if remove_accidental_hits:
        n = labels.shape[0]
        eye = torch.eye(n, dtype=torch.bool, device=labels.device)
        logits = logits.masked_fill((labels[:, None] == labels[None, :]) & ~eye, -torch.inf)
    return torch.mean(torch.logsumexp(logits, dim=1) - torch.diagonal(logits))


def top_k(scores, k: int):
    """Top-k per row, ties broken by the lowest index, NaN last.

    `torch.topk` does not specify its tie order, so this sorts: a stable ascending sort of the
    negated scores keeps the lowest index first among equal scores and puts NaN last, exactly as
    NumPy's `argsort(-scores, kind="stable")`. O(M log M) per row rather than topk's O(M).
    """
    order = torch.sort(-scores, dim=-1, stable=True).indices[..., :k]
    return torch.gather(scores, -1, order), order.to(torch.int32)


def solve(a, b):
    """Batched Cholesky solves; a system that is not positive definite gives a NaN row."""
    chol, info = torch.linalg.cholesky_ex(a)  # `_ex`: reports failure in `info`, never raises
    x = torch.cholesky_solve(b[..., None], chol)[..., 0]
    return torch.where((info == 0)[..., None], x, torch.nan)


def row_dots(starts, rows, cols, table, x, sparse: bool = True):
    """`⟨x[rows[k]], table[cols[k]]⟩` per observation of a CSR layout: `[n]` float32.

    `sparse`: by `torch.sparse.sampled_addmm` on the layout (no `[n, d]` temporaries); else by
    gathers, a chunk of observations at a time (what runs inside `vmap`, where the sparse
    products have no batching rule).
    """
    # (sampled_addmm refuses a layout of more observations than cells, repeated pairs.)
    if not sparse or int(cols.shape[0]) > int(x.shape[0]) * int(table.shape[0]):
        parts = [
            torch.sum(F.embedding(rows[c], x) * F.embedding(cols[c], table), dim=1)
            for c in _chunks(int(cols.shape[0]), int(table.shape[1]))
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    pattern = torch.sparse_csr_tensor(
        starts,
        cols,
        x.new_zeros(cols.shape[0]),
        size=(x.shape[0], table.shape[0]),
        check_invariants=False,
    )
    return torch.sparse.sampled_addmm(pattern, x, table.mT, beta=0.0).values()


def row_grams(starts, rows, cols, values, table, num_rows: int, sparse: bool = True):
    """`Σ_k values[k]·t_k t_kᵀ` (`t_k = table[cols[k]]`) over each row's observations of a CSR
    layout: `[num_rows, d, d]` float32.

    `sparse`: the CSR matrix of `values` times the table's outer products `t tᵀ` laid out as
    rows of d² (`[M, d²]`), a slice of their first axis at a time (`ROW_CHUNK_FLOATS`): one
    sparse product per slice, no `[n, d]` gathers; else gathers, outer products and
    `index_add`s, a chunk of observations at a time (inside `vmap`).
    """
    m, d = int(table.shape[0]), int(table.shape[1])
    if not sparse:
        out = table.new_zeros((num_rows, d, d))
        for c in _chunks(int(cols.shape[0]), d * d):
            f = F.embedding(cols[c], table)
            out = out.index_add(
                0, rows[c], values[c][:, None, None] * f[:, :, None] * f[:, None, :]
            )
        return out
    matrix = torch.sparse_csr_tensor(
        starts, cols, values, size=(num_rows, m), check_invariants=False
    )
    step = max(1, ROW_CHUNK_FLOATS // max(m * d, 1))
    parts = []
    for i in range(0, d, step):
        outer = (table[:, i : i + step, None] * table[:, None, :]).reshape(m, -1)
        parts.append(torch.matmul(matrix, outer).reshape(num_rows, -1, d))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def row_sums(starts, rows, cols, values, table, num_rows: int, sparse: bool = True):
    """`Σ_k values[k]·table[cols[k]]` over each row's observations of a CSR layout:
    `[num_rows, d]` float32 (`sparse` as `row_dots`; else gathers and `index_add`s, a chunk
    of observations at a time)."""
    if not sparse:
        out = table.new_zeros((num_rows, table.shape[1]))
        for c in _chunks(int(cols.shape[0]), int(table.shape[1])):
            out = out.index_add(0, rows[c], values[c][:, None] * F.embedding(cols[c], table))
        return out
    matrix = torch.sparse_csr_tensor(
        starts, cols, values, size=(num_rows, table.shape[0]), check_invariants=False
    )
    return torch.matmul(matrix, table)
