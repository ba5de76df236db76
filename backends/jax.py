"""The JAX backend: ``jax.lax.top_k`` and fused elementwise kernels that trace under ``jax.jit``.

Every function works on concrete arrays and on tracers alike, with 64-bit types off (JAX's
default) or on; nothing here reads array values, so selection compiles once per shape. The
loops of selection are ``lax.scan``: the traced program, and so the compile time, does not grow
with the number of chunks or of row blocks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jestcore.backends import generic
from jestcore.backends.generic import _block_step

__all__ = generic.__all__  # the same names as every backend module


def top_k(x: Any, k: int, /) -> Any:
    """Indices of the ``k`` largest entries of 1-D ``x``, descending, ties to the lower index.

    ``jax.lax.top_k`` puts the lower index first among equal values (its documentation says
    so; ``tests/test_jax_backend.py`` checks it), but it orders floats totally, ranking ``-0.0``
    below ``+0.0``; both zeros are mapped to ``+0.0`` first so that they tie, as in NumPy. NaN
    is not a valid input (selection never passes one: it replaces non-finite logits first).

    Args:
        x: A 1-D real array (concrete or traced).
        k: A Python int between 0 and ``x.shape[0]`` (static under ``jax.jit``).

    Returns:
        ``k`` indices, int64 when 64-bit types are enabled, else int32.
    """
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        x = jnp.where(x == 0, jnp.zeros((), dtype=x.dtype), x)
    _, idx = lax.top_k(x, k)
    return idx.astype(jnp.asarray(0).dtype)


def softplus(x: Any, /) -> Any:
    """``log(1 + exp(x))`` without overflow (``jax.nn.softplus``)."""
    return jax.nn.softplus(x)


def is_lazy(x: Any, /) -> bool:
    """Whether ``x`` is a tracer (inside ``jax.jit``, ``vmap``, ``grad``, ``shard_map``...)."""
    return isinstance(x, jax.core.Tracer)


def sum_softplus(x: Any, scale: Any, bias: Any, /) -> Any:
    """Column sums of ``softplus(scale * x + bias)`` for 2-D ``x`` (XLA fuses the elementwise)."""
    return jnp.sum(jax.nn.softplus(scale * x + bias), axis=0)


def logsumexp_columns(x: Any, scale: Any, /) -> Any:
    """Column log-sum-exp of ``scale * x`` for 2-D ``x`` (``jax.nn.logsumexp``, max-shifted)."""
    return jax.nn.logsumexp(scale * x, axis=0)


def chunk_loop(
    choose: Callable[[Any, Any, int], Any],
    advance: Callable[[Any, Any], Any],
    carry: Any,
    sizes: tuple[int, ...],
    noise: Any,
    /,
) -> Any:
    """The chunks of a joint selection as ``lax.scan``, one scan per run of equal chunk sizes.

    The same chunks as ``generic.chunk_loop`` (chunk ``k``: ``idx = choose(carry, noise[k],
    sizes[k])``, then ``carry = advance(carry, idx)`` but after the last), with one traced
    chunk per distinct size (at most two for :func:`jestcore.chunk_sizes`) plus the last chunk.
    Outside tracing (concrete arrays, op by op) it runs the plain loop instead: an eager scan
    would compile its body on every call.

    Returns:
        The indices of every chunk, concatenated.
    """
    if not _traced(carry):
        return generic.chunk_loop(choose, advance, carry, sizes, noise)
    chunks, start = [], 0
    for size, run in itertools.groupby(sizes[:-1]):
        count = len(list(run))

        def step(carry: Any, g: Any, size: int = size) -> tuple[Any, Any]:
            idx = choose(carry, g, size)
            return advance(carry, idx), idx

        xs = None if noise is None else noise[start : start + count]
        carry, idx = lax.scan(step, carry, xs, length=count)
        chunks.append(jnp.reshape(idx, (-1,)))
        start += count
    chunks.append(choose(carry, None if noise is None else noise[len(sizes) - 1], sizes[-1]))
    return jnp.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def default_block_size(n: int, /) -> int:
    """Rows of a chunk that joint selection from embeddings multiplies at once at N = ``n``.

    About ``2**23`` elements, a quarter of the other backends': under ``jax.jit`` XLA keeps
    about six block-sized temporaries alive (its memory analysis), so the default blocks of
    2**25 elements planned 828 MiB of temporaries at N = 65,536 and these 151 MiB, at about
    the same speed (bench/README.md).
    """
    return max(1, 2**23 // n)


def block_loop(fn: Callable[[Any, Any], Any], acc: Any, idx: Any, block_size: int, /) -> Any:
    """``generic.block_loop`` with the full blocks as ``lax.scan``, so ``block_size`` bounds memory.

    The same blocks in the same order: the full ones in a scan (one traced block), then the
    shorter last one, if any. Under ``jax.jit`` the temporaries are then those of a few blocks,
    however many blocks there are (XLA's memory analysis: see bench/README.md).
    Outside tracing it runs the plain loop.
    """
    if not _traced((acc, idx)):
        return generic.block_loop(fn, acc, idx, block_size)
    c = idx.shape[0]
    step = _block_step(c, block_size)
    full, rest = divmod(c, step)

    if full:
        blocks = jnp.reshape(idx[: full * step], (full, step))
        acc, _ = lax.scan(lambda a, block: (fn(a, block), None), acc, blocks)
    return fn(acc, idx[full * step :]) if rest else acc


def _traced(tree: Any) -> bool:
    """Whether any leaf of ``tree`` is a tracer."""
    return any(is_lazy(x) for x in jax.tree.leaves(tree))
