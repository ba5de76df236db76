"""Joint (chunked) and independent selection by Gumbel top-k, as defined in the design."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from jestcore import _validation as v
from jestcore._namespace import device_of, namespace_of, same_device
from jestcore.backends import get_backend
from jestcore.random import _gumbel_row, _seed_key

__all__ = ["chunk_sizes", "independent_select", "joint_select", "sub_batch_size"]


def chunk_sizes(n_select: int, n_chunks: int) -> tuple[int, ...]:
    """Splits ``n_select`` into ``n_chunks`` parts that differ by at most one, larger first.

    Args:
        n_select: The number of examples to select (``>= 1``).
        n_chunks: The number of chunks, between 1 and ``n_select``.

    Returns:
        ``n_chunks`` positive ints summing to ``n_select``.

    Example:
        >>> chunk_sizes(10, 4)
        (3, 3, 2, 2)
    """
    n_select = v.check_int("n_select", n_select, low=1)
    n_chunks = v.check_int("n_chunks", n_chunks, low=1, high=n_select, high_doc="n_select")
    q, r = divmod(n_select, n_chunks)
    return tuple(q + (k < r) for k in range(n_chunks))


def sub_batch_size(
    n: int, /, *, filter_ratio: float | None = None, batch_size: int | None = None
) -> int:
    """How many examples to keep from a super-batch of ``n``: the one rule every adapter uses.

    Give exactly one of ``filter_ratio`` (the fraction to discard, 0.8 in the paper) or
    ``batch_size`` (the number to keep). A filter ratio keeps ``round(n * (1 - filter_ratio))``
    examples, halves rounded up, and at least one, so a short last super-batch of a data
    loader still trains; a batch size must fit in ``n``.

    Args:
        n: The super-batch size (``>= 1``).
        filter_ratio: A float in ``[0, 1)``.
        batch_size: An int in ``[1, n]``.

    Returns:
        The sub-batch size, between 1 and ``n``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If both or neither option is given, or a value is out of range.

    Example:
        >>> sub_batch_size(320, filter_ratio=0.8), sub_batch_size(9, filter_ratio=0.8)
        (64, 2)
    """
    n = v.check_int("n", n, low=1)
    if (batch_size is None) == (filter_ratio is None):
        raise ValueError(
            "give exactly one of batch_size=... (examples to keep) or filter_ratio=... "
            f"(fraction to discard), got batch_size={batch_size!r}, filter_ratio={filter_ratio!r}"
        )
    if batch_size is not None:
        return v.check_int("batch_size", batch_size, low=1, high=n, high_doc=f"N = {n}")
    f = v.check_ratio("filter_ratio", filter_ratio)
    # Rounded to 9 decimals first, so that e.g. 10 * (1 - 0.75) = 2.5 rounds up as written.
    return min(n, max(1, math.floor(round(n * (1 - f), 9) + 0.5)))


def _noise_source(seed: Any, noise: Any, greedy: bool, n: int, xp: Any, device: Any) -> Callable:
    """A function ``row -> noise row`` (or ``None`` when greedy) for the chosen randomness."""
    if greedy:
        return lambda row: None
    if noise is not None:
        return lambda row: noise[row, ...] if noise.ndim == 2 else noise
    key = _seed_key(seed, xp, device)
    return lambda row: _gumbel_row(key, row, n, xp, device)


def _members(positions: Any, idx: Any, xp: Any) -> Any:
    """The boolean mask ``positions in idx``, in O(N log c) rather than an ``(c, N)`` comparison.

    Each position is looked up in the sorted ``idx`` with ``searchsorted``; a sentinel past the
    end (``N``, which no position equals) keeps every lookup in range without data-dependent
    shapes.
    """
    n = positions.shape[0]
    sentinel = xp.asarray([n], dtype=idx.dtype, device=device_of(idx))
    keys = xp.concat((xp.sort(idx), sentinel))
    return xp.take(keys, xp.searchsorted(keys, positions)) == positions


def _check_finite(name: str, x: Any, xp: Any, backend: Any) -> None:
    """:func:`~jestcore._validation.check_finite`, first trying one cheap pass: ``sum(x)``.

    A NaN or an infinity makes the sum non-finite, so a finite sum proves every entry finite; a
    non-finite sum (possibly mere overflow) falls back to the exact check and its message. The
    sum accumulates in float32 or wider: float16 sums overflow at 65504.
    """
    acc = xp.result_type(xp.float32, x.dtype)
    if not backend.is_lazy(x) and bool(xp.isfinite(xp.sum(x, dtype=acc))):
        return
    v.check_finite(name, x, xp, backend)


def blocked_select(
    logits: Any,
    sizes: tuple[int, ...],
    noise_row: Callable[[int], Any],
    update: Callable[[Any, Any], Any],
    xp: Any,
) -> Any:
    """The chunk loop shared by every joint selection.

    Args:
        logits: 1-D conditional logits of the first chunk (the diagonal of the score matrix).
        sizes: Chunk sizes.
        noise_row: ``k -> Gumbel noise row of chunk k`` (``None`` for greedy selection).
        update: ``(logits, chunk indices) -> logits`` after adding that chunk's contributions;
            not called after the last chunk.
        xp: The namespace.

    Returns:
        The selected indices, chunk by chunk, each chunk in descending perturbed logit.
    """
    backend = get_backend(xp)
    n = logits.shape[0]
    positions = None
    selected = xp.zeros(n, dtype=xp.bool, device=device_of(logits))
    neg_inf = xp.asarray(-xp.inf, dtype=logits.dtype, device=device_of(logits))
    # Non-finite candidates (possible only where values cannot be checked, e.g. under jit) rank
    # after every finite candidate, and already selected items after everything.
    last_resort = xp.asarray(
        -xp.finfo(logits.dtype).max, dtype=logits.dtype, device=device_of(logits)
    )
    chunks = []
    for k, size in enumerate(sizes):
        g = noise_row(k)
        perturbed = logits if g is None else logits + xp.astype(g, logits.dtype)
        perturbed = xp.where(xp.isfinite(perturbed), perturbed, last_resort)
        perturbed = xp.where(selected, neg_inf, perturbed)
        idx = backend.top_k(perturbed, size)
        chunks.append(idx)
        if k + 1 < len(sizes):
            if positions is None:
                positions = xp.arange(n, dtype=idx.dtype, device=device_of(logits))
            selected = selected | _members(positions, idx, xp)
            logits = update(logits, idx)
    return xp.concat(chunks) if len(chunks) > 1 else chunks[0]


def joint_select(
    scores: Any,
    /,
    n_select: int,
    *,
    n_chunks: int = 16,
    seed: Any = None,
    noise: Any = None,
    greedy: bool = False,
) -> Any:
    """Selects ``n_select`` examples jointly, chunk by chunk, from an ``N x N`` score matrix.

    Chunk 0 is drawn from the diagonal ``S_ii``; chunk ``k > 0`` from the conditional logits
    ``S_mm + sum_{j selected} (S_jm + S_mj)`` of the candidates not yet selected, by Gumbel
    top-k (sampling without replacement with probability proportional to ``exp(logit)``).
    The conditional logits are updated incrementally from the rows and columns of each new
    chunk, so the work after reading ``S`` is O(N * n_select).

    Args:
        scores: ``(N, N)`` real floating score matrix, e.g. ``learnability(L, R)`` of two
            :func:`~jestcore.sigmoid_loss_matrix` results. Higher means more worth training on.
            Logits accumulate in float32 (float64 for float64 scores), so float16 and
            bfloat16 scores cannot overflow in the sums.
        n_select: How many examples to select, between 1 and N.
        n_chunks: How many chunks to draw them in (the paper uses 16), between 1 and
            ``n_select``; see :func:`chunk_sizes`.
        seed: Seed of the portable generator (an int in ``[0, 2**32)`` or a 0-d integer array).
        noise: Explicit Gumbel noise of shape ``(n_chunks, N)``, row ``k`` for chunk ``k``.
        greedy: Take the plain top-k of each chunk's logits (no noise).

    Returns:
        A 1-D integer array of ``n_select`` distinct indices (int64 where the namespace allows,
        else its default index dtype), chunk by chunk, each chunk in descending perturbed
        logit, ties to the lower index; same namespace and device as ``scores``.

    Raises:
        TypeError: If an argument has the wrong type (e.g. integer scores).
        ValueError: If a shape or value is out of range, or there is not exactly one source of
            randomness.

    Example:
        >>> import numpy as np
        >>> S = np.array([[3.0, -1.0, 0.0], [-1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
        >>> joint_select(S, 2, n_chunks=2, greedy=True).tolist()
        [0, 2]
    """
    xp = namespace_of(scores, noise, name="scores, noise")
    v.check_floating("scores", scores, xp, ndim=2)
    n = scores.shape[0]
    if scores.shape[1] != n:
        raise ValueError(f"scores must be a square (N, N) matrix, got shape {tuple(scores.shape)}")
    v.check_nonempty("scores", scores)
    n_select = v.check_int("n_select", n_select, low=1, high=n, high_doc=f"N = {n}")
    sizes = chunk_sizes(n_select, n_chunks)
    v.check_randomness(seed, noise, greedy, (len(sizes), n), xp)
    same_device({"scores": scores, "noise": noise, "seed": seed})
    backend = get_backend(xp)
    _check_finite("scores", scores, xp, backend)
    if noise is not None:
        v.check_finite("noise", noise, xp, backend)

    # Logits accumulate in float32 or wider: sums of float16 scores overflow at 65504.
    dtype = xp.result_type(xp.float32, scores.dtype)
    diag = xp.take(xp.reshape(scores, (-1,)), xp.arange(n, device=device_of(scores)) * (n + 1))

    def update(logits: Any, idx: Any) -> Any:
        rows = xp.sum(xp.take(scores, idx, axis=0), axis=0, dtype=dtype)
        cols = xp.sum(xp.take(scores, idx, axis=1), axis=1, dtype=dtype)
        return logits + rows + cols

    noise_row = _noise_source(seed, noise, greedy, n, xp, device_of(scores))
    return blocked_select(xp.astype(diag, dtype), sizes, noise_row, update, xp)


def independent_select(
    scores: Any,
    /,
    n_select: int,
    *,
    seed: Any = None,
    noise: Any = None,
    greedy: bool = False,
) -> Any:
    """Selects ``n_select`` examples independently by their per-example scores.

    The same Gumbel top-k as :func:`joint_select`, in one chunk: sampling without replacement
    with probability proportional to ``exp(score)``. Exact for losses that are sums of
    per-example terms; for pairwise losses it is the baseline that ignores interactions.

    Args:
        scores: 1-D real floating per-example scores of length N (perturbed in float32, or
            float64 for float64 scores).
        n_select: How many examples to select, between 1 and N.
        seed: Seed of the portable generator; the noise equals row 0 of ``joint_select``'s.
        noise: Explicit Gumbel noise of shape ``(N,)``.
        greedy: Take the plain top-k (no noise).

    Returns:
        A 1-D integer array of ``n_select`` distinct indices in descending perturbed score,
        ties to the lower index.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape or value is out of range, or there is not exactly one source of
            randomness.

    Example:
        >>> import numpy as np
        >>> independent_select(np.array([0.1, 2.0, 1.0]), 2, greedy=True).tolist()
        [1, 2]
    """
    xp = namespace_of(scores, noise, name="scores, noise")
    v.check_floating("scores", scores, xp, ndim=1)
    v.check_nonempty("scores", scores)
    n = scores.shape[0]
    n_select = v.check_int("n_select", n_select, low=1, high=n, high_doc=f"N = {n}")
    v.check_randomness(seed, noise, greedy, (n,), xp)
    same_device({"scores": scores, "noise": noise, "seed": seed})
    backend = get_backend(xp)
    v.check_finite("scores", scores, xp, backend)
    if noise is not None:
        v.check_finite("noise", noise, xp, backend)
    noise_row = _noise_source(seed, noise, greedy, n, xp, device_of(scores))
    logits = xp.astype(scores, xp.result_type(xp.float32, scores.dtype), copy=False)
    return blocked_select(logits, (n_select,), noise_row, lambda lg, idx: lg, xp)
