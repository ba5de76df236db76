"""The JAX backend: ``jax.lax.top_k`` and fused elementwise kernels that trace under ``jax.jit``.

Every function works on concrete arrays and on tracers alike, with 64-bit types off (JAX's
default) or on; nothing here reads array values, so selection compiles once per shape.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["is_lazy", "softplus", "sum_softplus", "top_k"]


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
