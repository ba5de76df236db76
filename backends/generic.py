"""The pure array-API backend: serves any standard-compliant namespace (e.g. array-api-strict)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat

__all__ = [
    "block_loop",
    "chunk_loop",
    "default_block_size",
    "is_lazy",
    "logsumexp_columns",
    "softplus",
    "sum_softplus",
    "top_k",
]


def top_k(x: Any, k: int, /) -> Any:
    """Indices of the ``k`` largest entries of 1-D ``x``, descending, ties to the lower index."""
    xp = array_api_compat.array_namespace(x)
    return xp.argsort(-x, stable=True)[:k]


def softplus(x: Any, /) -> Any:
    """``log(1 + exp(x))`` without overflow: ``max(x, 0) + log1p(exp(-|x|))``."""
    xp = array_api_compat.array_namespace(x)
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


def is_lazy(x: Any, /) -> bool:
    """Whether ``x`` is a lazy or traced array whose values cannot be read."""
    return bool(array_api_compat.is_lazy_array(x))


def sum_softplus(x: Any, scale: Any, bias: Any, /) -> Any:
    """Column sums of ``softplus(scale * x + bias)`` for 2-D ``x``."""
    xp = array_api_compat.array_namespace(x)
    return xp.sum(softplus(scale * x + bias), axis=0)


def logsumexp_columns(x: Any, scale: Any, /) -> Any:
    """Column log-sum-exp of ``scale * x`` for 2-D ``x``, shifted by the column maxima.

    ``log(sum_r exp(scale * x[r, m]))`` for every column ``m``, computed as
    ``c_m + log(sum_r exp(scale * x[r, m] - c_m))`` with ``c_m`` the column's maximum, so no
    ``exp`` overflows whatever the scale (a non-finite maximum is replaced by 0, so an infinite
    entry gives an infinite result, not NaN).
    """
    xp = array_api_compat.array_namespace(x)
    z = scale * x
    top = xp.max(z, axis=0)
    top = xp.where(xp.isfinite(top), top, xp.zeros_like(top))
    return top + xp.log(xp.sum(xp.exp(z - top), axis=0))


def default_block_size(n: int, /) -> int:
    """Rows of a chunk that joint selection from embeddings multiplies at once at N = ``n``.

    About ``2**25`` elements (128 MiB of float32 per temporary): at N = 163,840 NumPy selected
    ~1.15x faster with blocks of ~170-200 rows than of ~100 (products of few rows against a
    long operand are slow); see bench/README.md.
    """
    return max(1, 2**25 // n)


def chunk_loop(
    choose: Callable[[Any, Any, int], Any],
    advance: Callable[[Any, Any], Any],
    carry: Any,
    sizes: tuple[int, ...],
    noise: Any,
    /,
) -> Any:
    """The chunks of a joint selection, in order: a plain Python loop.

    Chunk ``k`` picks ``idx = choose(carry, noise[k], sizes[k])`` (``noise`` row ``k``, or
    ``None`` when ``noise`` is ``None``), then ``carry = advance(carry, idx)`` (not after the
    last chunk).

    Returns:
        The indices of every chunk, concatenated.
    """
    chunks = []
    for k, size in enumerate(sizes):
        idx = choose(carry, None if noise is None else noise[k, ...], size)
        chunks.append(idx)
        if k + 1 < len(sizes):
            carry = advance(carry, idx)
    if len(chunks) == 1:
        return chunks[0]
    return array_api_compat.array_namespace(chunks[0]).concat(chunks)


def _block_step(c: int, block_size: int, /) -> int:
    """Rows per block when ``c`` rows are split into nearly equal blocks of ``<= block_size``."""
    return -(-c // -(-c // block_size)) if c else 1


def block_loop(fn: Callable[[Any, Any], Any], acc: Any, idx: Any, block_size: int, /) -> Any:
    """``acc = fn(acc, block)`` over consecutive blocks of the 1-D ``idx``, in order.

    The blocks are nearly equal, of :func:`_block_step` rows each (the last one may be
    shorter), so that at most ``block_size`` rows are processed at once.
    """
    c = idx.shape[0]
    step = _block_step(c, block_size)
    for start in range(0, c, step):
        acc = fn(acc, idx[start : min(start + step, c)])
    return acc
