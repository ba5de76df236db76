"""The NumPy backend: an ``argpartition`` top-k and in-place elementwise kernels."""

from __future__ import annotations

from typing import Any

import numpy as np
from jestcore.backends import generic

__all__ = generic.__all__  # the same names as every backend module

#: The loops (plain Python loops) and the default block are the generic module's.
block_loop, chunk_loop = generic.block_loop, generic.chunk_loop
default_block_size = generic.default_block_size


def top_k(x: Any, k: int, /) -> Any:
    """Indices of the ``k`` largest entries of 1-D ``x``, descending, ties to the lower index.

    ``argpartition`` finds the k-th largest value in O(N); every entry at least that large is a
    candidate (ties included), and a stable sort of the few candidates fixes the order.
    """
    x = np.asarray(x)
    n = x.shape[0]
    if k == 0:
        return np.empty(0, dtype=np.intp)
    if k >= n // 4:
        return np.argsort(-x, kind="stable")[:k]
    kth = x[np.argpartition(x, n - k)[n - k]]
    candidates = np.flatnonzero(x >= kth)
    return candidates[np.argsort(-x[candidates], kind="stable")[:k]]


def softplus(x: Any, /) -> Any:
    """``log(1 + exp(x))`` without overflow: ``max(x, 0) + log1p(exp(-|x|))``, in place."""
    x = np.asarray(x)
    out = np.abs(x)
    np.negative(out, out=out)
    np.exp(out, out=out)
    np.log1p(out, out=out)
    out += np.maximum(x, 0)
    return out


def is_lazy(x: Any, /) -> bool:
    """NumPy arrays are always concrete."""
    return False


def sum_softplus(x: Any, scale: Any, bias: Any, /) -> Any:
    """Column sums of ``softplus(scale * x + bias)`` for 2-D ``x``, with one temporary."""
    z = np.multiply(x, scale, dtype=x.dtype)
    z += bias
    pos = np.maximum(z, 0)
    np.abs(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    np.log1p(z, out=z)
    z += pos
    return z.sum(axis=0)


def logsumexp_columns(x: Any, scale: Any, /) -> Any:
    """Column log-sum-exp of ``scale * x`` for 2-D ``x``, max-shifted, with one temporary."""
    z = np.multiply(x, scale, dtype=x.dtype)
    top = z.max(axis=0)
    top[~np.isfinite(top)] = 0
    z -= top
    np.exp(z, out=z)
    out = z.sum(axis=0)
    np.log(out, out=out)
    out += top
    return out
