"""Minibatch index streams drawn in core, so every backend sees the same batches."""

from __future__ import annotations

import numpy as np

from ..validate import check_int


class MinibatchSampler:
    """Epochs of shuffled positions `0..n-1`, cut into batches of a fixed size.

    Each epoch is a fresh permutation from `numpy.random.default_rng(seed)`; a batch that would
    cross the end of an epoch continues into the next one, so every batch has exactly
    `batch_size` positions (fixed shapes: one compilation) and every rating is seen once per epoch.

    Args:
        n: number of ratings.
        batch_size: positions per batch, 1 <= batch_size <= n.
        seed: seed of the generator.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0) -> None:
        # Bools are refused and NumPy ints accepted, as everywhere (cfcore.validate).
        batch_size = check_int(
            "batch_size",
            batch_size,
            minimum=1,
            maximum=n,
            expected=f"an int in [1, {n}] (the number of ratings)",
        )
        self.n, self.batch_size = n, batch_size
        self._rng = np.random.default_rng(check_int("seed", seed, minimum=0))
        self._perm = np.empty(0, dtype=np.int32)
        self._offset = 0  # next unread position of the current permutation

    def take(self, num_batches: int) -> np.ndarray:
        """The next `num_batches` batches as int32 positions, shape `[num_batches, batch_size]`."""
        need = num_batches * self.batch_size
        out = np.empty(need, dtype=np.int32)
        filled = 0
        # An offset into the current permutation: no copy of the rest of the epoch per call.
        while filled < need:
            if self._offset == len(self._perm):
                self._perm = self._rng.permutation(self.n).astype(np.int32)
                self._offset = 0
            k = min(need - filled, len(self._perm) - self._offset)
            out[filled : filled + k] = self._perm[self._offset : self._offset + k]
            filled += k
            self._offset += k
        return out.reshape(num_batches, self.batch_size)
