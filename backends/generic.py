"""The pure array-API backend: serves any standard-compliant namespace (e.g. array-api-strict)."""

from __future__ import annotations

from typing import Any

import array_api_compat

__all__ = ["is_lazy", "softplus", "sum_softplus", "top_k"]


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
