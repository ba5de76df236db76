"""Joint selection that compiles once under ``jax.jit``: the chunk loop as ``jax.lax.scan``.

These functions take the same arguments and return the same indices as
:func:`jestcore.joint_select` and :func:`jestcore.joint_select_embeddings` (which also trace
under ``jax.jit``), but run the chunk loop as ``lax.scan`` instead of unrolling it in Python.

Why a scan: measured on 2 shared CPU cores (JAX 0.10.2, CPU time of the process, so that
other load on the machine counts less), learnability from two models, ``d = 256``,
``n_select = N // 5`` (819 and 3276, so two chunk sizes and two scan bodies):

| N | n_chunks | compile: unrolled, scan | run: unrolled, scan | indices |
|---|---|---|---|---|
| 4096 | 4 | 0.63-0.69 s, 0.43-0.50 s | 95-96 ms, 90-104 ms | identical |
| 4096 | 16 | 1.4-1.7 s, 0.67-0.70 s | 135 ms, 135-141 ms | identical |
| 4096 | 64 | 6.8-6.9 s, 0.72-0.76 s | 225-233 ms, 197-205 ms | identical |
| 16384 | 16 | 1.4-1.8 s, 0.71 s | 1.73 s, 1.75-1.79 s | identical |

The unrolled loop traces ``n_chunks`` copies of the top-k and of the four
``(c x d) @ (d x N)`` products, so its compile time grows linearly with ``n_chunks``; the scan
traces one body per chunk size and compiles in the same time for any ``n_chunks``. Run times
agree within the noise (5-10% on this shared machine): the chunks depend on each other, so
unrolling gives XLA nothing to overlap, and a chunk's matrix products dwarf the loop overhead.
Fully unrolling the scan (``unroll=True``) compiled in 0.97 s at N = 16384 and ran no faster.

``unroll`` is passed to ``lax.scan`` for anyone who wants to trade compile time back.

Chunks are drawn exactly as :func:`jestcore.selection.blocked_select` draws them: noise row
``k`` for chunk ``k``; non-finite perturbed logits (possible only under ``jax.jit``, where values
are not checked) rank after every finite candidate; already selected items after everything.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

import array_api_compat
import jax
import jax.numpy as jnp
from jax import lax
from jestcore.backends import get_backend

from jestcore import _validation as v
from jestcore.random import _GOLDEN, _MANTISSA_BITS, _check_seed, _mix, _seed_key, _srl
from jestcore.selection import chunk_sizes
from jestcore.streaming import (
    BLOCK_ELEMENTS,
    PairEmbeddings,
    _models,
    _Terms,
    check_model_shapes,
)

__all__ = ["gumbel_rows", "joint_select", "joint_select_embeddings"]

_backend = get_backend(jnp)


def check_jax(**arrays: Any) -> None:
    """Refuses other frameworks' arrays: each must be a JAX array (or NumPy, which JAX converts).

    ``None`` and Python numbers are skipped (their own checks follow).
    """
    for name, x in arrays.items():
        if x is None or isinstance(x, int | float):
            continue
        if not (array_api_compat.is_jax_array(x) or array_api_compat.is_numpy_array(x)):
            raise TypeError(
                f"{name} must be a JAX array (or a NumPy array, which JAX converts), got "
                f"{type(x).__module__}.{type(x).__name__}"
            )


def gumbel_rows(seed: Any, n_rows: int, n: int, /, *, offset: Any = 0) -> Any:
    """Rows ``0..n_rows-1`` and columns ``offset..offset+n-1`` of the portable Gumbel stream.

    Bit for bit those columns of ``jestcore.gumbel_noise(seed, (n_rows, N), xp=jax.numpy)``
    (and of NumPy's up to the last bit of ``log``), computed in one vectorised pass; ``offset``
    may be traced, so each device of a mesh can draw the columns of its own shard.

    Args:
        seed: A Python int in ``[0, 2**32)`` or a 0-d integer array (may be traced).
        n_rows: Number of rows (static).
        n: Number of columns (static).
        offset: First column, a Python int or 0-d integer array.

    Returns:
        A float32 array of shape ``(n_rows, n)``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If the seed, a size or the offset is out of range.
    """
    _check_seed(seed)
    n_rows = v.check_int("n_rows", n_rows, low=0)
    n = v.check_int("n", n, low=0, high=2**31 - 1, high_doc="2**31 - 1")
    if isinstance(offset, int):
        v.check_int("offset", offset, low=0, high=2**31 - 1, high_doc="2**31 - 1")
    elif not (
        array_api_compat.is_jax_array(offset)
        and offset.ndim == 0
        and jnp.issubdtype(offset.dtype, jnp.integer)
    ):
        raise TypeError(f"offset must be an int or a 0-d integer JAX array, got {offset!r}")
    key = _seed_key(seed, jnp, None)
    rows = jnp.arange(n_rows, dtype=jnp.int32)
    row_key = _mix(key + (rows + 1) * _GOLDEN)[:, None]  # int32 wraps as _wrap_int does
    col = (jnp.arange(n, dtype=jnp.int32) + jnp.asarray(offset).astype(jnp.int32))[None, :]
    bits = _mix(_mix(col ^ row_key) + row_key)
    u = (_srl(bits, 32 - _MANTISSA_BITS).astype(jnp.float32) + 0.5) * (2.0**-_MANTISSA_BITS)
    return -jnp.log(-jnp.log(u))


def _noise(seed: Any, noise: Any, greedy: bool, n_chunks: int, n: int) -> Any:
    """The ``(n_chunks, n)`` noise of the chosen randomness (``None`` when greedy)."""
    if greedy:
        return None
    if noise is not None:
        return jnp.reshape(noise, (n_chunks, n))
    return gumbel_rows(seed, n_chunks, n)


def chunk_loop(
    logits: Any,
    sizes: tuple[int, ...],
    noise: Any,
    pick: Callable[[Any, int], Any],
    update: Callable[[Any, Any], Any],
    offset: Any = 0,
    *,
    unroll: int | bool = 1,
) -> Any:
    """The chunk loop of joint selection as ``lax.scan``, one scan per run of equal chunk sizes.

    Args:
        logits: ``(n,)`` conditional logits of chunk 0.
        sizes: Chunk sizes (static).
        noise: ``(len(sizes), n)`` Gumbel noise, row ``k`` for chunk ``k``; ``None`` for greedy.
        pick: ``(perturbed logits, size) -> size indices`` in descending perturbed logit, ties to
            the lower index, numbered so that entry ``i`` of ``logits`` is ``offset + i``.
        update: ``(logits, chunk indices) -> logits`` with that chunk's contributions added; not
            called after the last chunk.
        offset: The index that ``pick`` reports for entry 0 of ``logits`` (a device's first
            row on a mesh; may be traced); indices outside ``[offset, offset + n)`` belong to
            other devices.
        unroll: Passed to ``lax.scan``.

    Returns:
        The ``sum(sizes)`` selected indices, chunk by chunk.
    """
    dtype = logits.dtype
    neg_inf = jnp.asarray(-jnp.inf, dtype=dtype)
    last_resort = jnp.asarray(-jnp.finfo(dtype).max, dtype=dtype)

    n = logits.shape[0]

    def mark(selected: Any, idx: Any) -> Any:
        """``selected`` with this device's entries of ``idx`` set: an O(c) scatter."""
        local = idx - offset
        local = jnp.where((local >= 0) & (local < n), local, n)  # others' rows: out of bounds
        return selected.at[local].set(True, mode="drop")

    def choose(logits: Any, selected: Any, g: Any, size: int) -> Any:
        perturbed = logits if g is None else logits + g.astype(dtype)
        perturbed = jnp.where(jnp.isfinite(perturbed), perturbed, last_resort)
        return pick(jnp.where(selected, neg_inf, perturbed), size)

    def body(size: int) -> Callable:
        def step(carry: tuple[Any, Any], g: Any) -> tuple[tuple[Any, Any], Any]:
            logits, selected = carry
            idx = choose(logits, selected, g, size)
            selected = mark(selected, idx)
            return (update(logits, idx), selected), idx

        return step

    # Nothing selected yet, typed like the loop's output (under shard_map: varying where
    # logits or offset vary), as lax.scan requires of its carry.
    carry = (logits, jnp.zeros_like(logits, dtype=jnp.bool_) | (offset < 0))
    chunks, start = [], 0
    for size, run in itertools.groupby(sizes[:-1]):
        count = len(list(run))
        xs = None if noise is None else noise[start : start + count]
        carry, idx = lax.scan(body(size), carry, xs, length=count, unroll=unroll)
        chunks.append(jnp.reshape(idx, (-1,)))
        start += count
    last = None if noise is None else noise[len(sizes) - 1]
    chunks.append(choose(*carry, last, sizes[-1]))
    return jnp.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def joint_select(
    scores: Any,
    /,
    n_select: int,
    *,
    n_chunks: int = 16,
    seed: Any = None,
    noise: Any = None,
    greedy: bool = False,
    unroll: int | bool = 1,
) -> Any:
    """:func:`jestcore.joint_select` for JAX arrays, with the chunk loop as ``lax.scan``.

    Same arguments, checks and result (up to floating-point near-ties); under ``jax.jit`` mark
    ``n_select``, ``n_chunks``, ``greedy`` and ``unroll`` static, and ``scores``, ``seed`` and
    ``noise`` may be traced. Values (NaN, inf) are checked only outside ``jax.jit``; under it,
    non-finite candidates rank after every finite one.

    Args:
        scores: ``(N, N)`` real floating score matrix.
        n_select: How many examples to select, between 1 and N.
        n_chunks: How many chunks to draw them in, between 1 and ``n_select``.
        seed: Seed of the portable generator (an int in ``[0, 2**32)`` or a 0-d integer array).
        noise: Explicit Gumbel noise of shape ``(n_chunks, N)``.
        greedy: Take the plain top-k of each chunk's logits (no noise).
        unroll: Passed to ``lax.scan`` (``True`` unrolls the loop completely).

    Returns:
        ``n_select`` distinct int32 indices (int64 with 64-bit types enabled), chunk by chunk,
        each chunk in descending perturbed logit, ties to the lower index.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape or value is out of range, or there is not exactly one source of
            randomness.

    Example:
        >>> import jax.numpy as jnp
        >>> S = jnp.array([[3.0, -1.0, 0.0], [-1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
        >>> joint_select(S, 2, n_chunks=2, greedy=True).tolist()
        [0, 2]
    """
    xp = jnp
    check_jax(scores=scores, noise=noise)
    v.check_floating("scores", scores, xp, ndim=2)
    n = scores.shape[0]
    if scores.shape[1] != n:
        raise ValueError(f"scores must be a square (N, N) matrix, got shape {tuple(scores.shape)}")
    v.check_nonempty("scores", scores)
    n_select = v.check_int("n_select", n_select, low=1, high=n, high_doc=f"N = {n}")
    sizes = chunk_sizes(n_select, n_chunks)
    v.check_randomness(seed, noise, greedy, (len(sizes), n), xp)
    v.check_finite("scores", scores, xp, _backend)
    if noise is not None:
        v.check_finite("noise", noise, xp, _backend)
    return _joint_select(scores, as_seed(seed), noise, sizes=sizes, greedy=greedy, unroll=unroll)


def as_seed(seed: Any) -> Any:
    """A validated seed as something ``jax.jit`` can trace: Python ints become uint32 arrays."""
    return jnp.asarray(seed, dtype=jnp.uint32) if isinstance(seed, int) else seed


@functools.partial(jax.jit, static_argnames=("sizes", "greedy", "unroll"))
def _joint_select(
    scores: Any, seed: Any, noise: Any, *, sizes: tuple[int, ...], greedy: bool, unroll: Any
) -> Any:
    """The compiled part of :func:`joint_select` (inlined when called under an outer jit)."""
    n = scores.shape[0]
    dtype = jnp.result_type(jnp.float32, scores.dtype)  # as the spec: float16 sums overflow

    def update(logits: Any, idx: Any) -> Any:
        rows = jnp.sum(jnp.take(scores, idx, axis=0), axis=0, dtype=dtype)
        cols = jnp.sum(jnp.take(scores, idx, axis=1), axis=1, dtype=dtype)
        return logits + rows + cols

    return chunk_loop(
        jnp.diagonal(scores).astype(dtype),
        sizes,
        _noise(seed, noise, greedy, len(sizes), n),
        _backend.top_k,
        update,
        unroll=unroll,
    )


def check_embeddings(
    learner: Any, reference: Any, score: str
) -> tuple[list[tuple[str, PairEmbeddings, int]], dict[str, Any], int]:
    """Validates the models that ``score`` needs, as :func:`jestcore.joint_select_embeddings`.

    Returns:
        ``(models, arrays, N)``: ``(name, embeddings, sign)`` of each model, its embedding
        arrays by name (``"learner.image"``...), and the number of examples.
    """
    models = _models(learner, reference, score)
    arrays = {f"{name}.{f}": getattr(m, f) for name, m, _ in models for f in ("image", "text")}
    check_jax(**arrays)
    n = check_model_shapes(models, jnp)
    return models, arrays, n


def embedding_terms(
    models: list[tuple[str, PairEmbeddings, int]], arrays: dict[str, Any]
) -> list[_Terms]:
    """Each model's signed terms, in float32 (float64 when an input is float64)."""
    dtype = jnp.result_type(jnp.float32, *(a.dtype for a in arrays.values()))
    return [_Terms(m, sign, dtype, jnp, _backend) for _, m, sign in models]


def blocked_update(terms: list[Any], block_size: int) -> Callable[[Any, Any], Any]:
    """``(logits, idx) -> logits`` plus every term's off-diagonal sums, ``block_size`` rows at once.

    Args:
        terms: Objects with ``off_diagonal_sums(block)`` (``(c,) indices -> (n,) sums``).
        block_size: Rows of a chunk multiplied at once (bounds the temporaries).
    """

    def update(logits: Any, idx: Any) -> Any:
        for start in range(0, idx.shape[0], block_size):
            block = idx[start : min(start + block_size, idx.shape[0])]
            for t in terms:
                logits = logits + t.off_diagonal_sums(block)
        return logits

    return update


def joint_select_embeddings(
    learner: PairEmbeddings | None,
    reference: PairEmbeddings | None,
    /,
    n_select: int,
    *,
    n_chunks: int = 16,
    score: str = "learnability",
    seed: Any = None,
    noise: Any = None,
    greedy: bool = False,
    block_size: int | None = None,
    unroll: int | bool = 1,
) -> Any:
    """:func:`jestcore.joint_select_embeddings` for JAX arrays, with the chunk loop as ``lax.scan``.

    Same arguments, checks and result (up to floating-point near-ties). Under ``jax.jit`` mark
    ``n_select``, ``n_chunks``, ``score``, ``greedy``, ``block_size`` and ``unroll`` static; the
    embeddings, ``scale``, ``bias``, ``seed`` and ``noise`` may be traced, so one compilation
    serves every step of a training run. Values (NaN, inf) are checked only outside
    ``jax.jit``; under it, non-finite candidates rank after every finite one.

    Args:
        learner: The learner's :class:`~jestcore.PairEmbeddings` (``None`` for
            ``score="easy_reference"``).
        reference: The reference model's :class:`~jestcore.PairEmbeddings` (``None`` for
            ``score="hard_learner"``).
        n_select: How many examples to select, between 1 and N.
        n_chunks: How many chunks to draw them in, between 1 and ``n_select``.
        score: ``"learnability"``, ``"hard_learner"`` or ``"easy_reference"``.
        seed: Seed of the portable generator (an int in ``[0, 2**32)`` or a 0-d integer array).
        noise: Explicit Gumbel noise of shape ``(n_chunks, N)``.
        greedy: Take the plain top-k of each chunk's logits (no noise).
        block_size: At most this many rows of a chunk are multiplied at once; by default about
            2**24 elements of temporaries.
        unroll: Passed to ``lax.scan`` (``True`` unrolls the loop completely).

    Returns:
        ``n_select`` distinct int32 indices (int64 with 64-bit types enabled), chunk by chunk,
        each chunk in descending perturbed logit, ties to the lower index.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape or value is out of range, a needed model is missing, or there is
            not exactly one source of randomness.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jestcore import PairEmbeddings
        >>> k1, k2 = jax.random.split(jax.random.key(0))
        >>> emb = PairEmbeddings(jax.random.normal(k1, (8, 4)), jax.random.normal(k2, (8, 4)),
        ...                      1.0, 0.0)
        >>> select = jax.jit(joint_select_embeddings,
        ...                  static_argnames=("n_select", "n_chunks", "score"))
        >>> select(emb, None, n_select=4, n_chunks=2, score="hard_learner", seed=0).shape
        (4,)
    """
    _, arrays, n = check_embeddings(learner, reference, score)
    check_jax(noise=noise)
    n_select = v.check_int("n_select", n_select, low=1, high=n, high_doc=f"N = {n}")
    sizes = chunk_sizes(n_select, n_chunks)
    v.check_randomness(seed, noise, greedy, (len(sizes), n), jnp)
    if block_size is None:
        block_size = max(1, BLOCK_ELEMENTS // n)
    block_size = v.check_int("block_size", block_size, low=1)
    for name, a in arrays.items():
        v.check_finite(name, a, jnp, _backend)
    if noise is not None:
        v.check_finite("noise", noise, jnp, _backend)
    return _joint_select_embeddings(
        learner,
        reference,
        as_seed(seed),
        noise,
        score=score,
        sizes=sizes,
        greedy=greedy,
        block_size=block_size,
        unroll=unroll,
    )


@functools.partial(jax.jit, static_argnames=("score", "sizes", "greedy", "block_size", "unroll"))
def _joint_select_embeddings(
    learner: Any,
    reference: Any,
    seed: Any,
    noise: Any,
    *,
    score: str,
    sizes: tuple[int, ...],
    greedy: bool,
    block_size: int,
    unroll: Any,
) -> Any:
    """The compiled part of :func:`joint_select_embeddings` (inlined under an outer jit)."""
    models, arrays, n = check_embeddings(learner, reference, score)
    terms = embedding_terms(models, arrays)
    logits = terms[0].diagonal()
    for t in terms[1:]:
        logits = logits + t.diagonal()
    return chunk_loop(
        logits,
        sizes,
        _noise(seed, noise, greedy, len(sizes), n),
        _backend.top_k,
        blocked_update(terms, block_size),
        unroll=unroll,
    )
