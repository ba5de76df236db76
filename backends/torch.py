"""The PyTorch backend: ``torch.topk`` with an exact tie rule, fused softplus, lazy detection.

Every function creates its tensors on the input's device, never reads a value back to the host
(no ``.item()``, no ``bool(tensor)``), and traces under ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jestcore.backends import generic

__all__ = generic.__all__  # the same names as every backend module

#: The loops (plain Python loops) and the default block are the generic module's.
block_loop, chunk_loop = generic.block_loop, generic.chunk_loop
default_block_size = generic.default_block_size

#: Below this ``k / N`` a ``torch.topk`` pass plus tie repair beats a stable sort of all N
#: entries: a rule of thumb from a one-off CPU measurement whose script was not kept in bench/
#: (on CUDA ``topk`` wins more clearly); re-measure before changing it.
_TOPK_FRACTION = 0.25


def top_k(x: Any, k: int, /) -> Any:
    """Indices of the ``k`` largest entries of 1-D ``x``, descending, ties to the lower index.

    ``torch.topk`` leaves the order of equal values unspecified, so its result is repaired
    without data-dependent shapes: with ``t`` the k-th largest value, the result is every entry
    above ``t`` plus the lowest-index entries equal to ``t`` (a second ``topk``, over integer
    keys that rank those by position), and a stable sort of these ``k`` by value orders ties by
    index. For large ``k / N`` a stable sort of everything is
    faster and used instead. ``x`` must be free of NaN.
    """
    n = x.shape[0]
    if k == 0:
        return torch.empty(0, dtype=torch.int64, device=x.device)
    if k >= n * _TOPK_FRACTION:
        return torch.sort(x, descending=True, stable=True).indices[:k]
    values, indices = torch.topk(x, k, sorted=True)
    threshold = values[k - 1]
    # topk holds every entry above the threshold, first; of the entries equal to it, the result
    # needs the lowest-index ones: the j-th lies where the running count of ties reaches j.
    n_above = torch.sum(values > threshold, dtype=torch.int64)
    tie_count = torch.cumsum(x == threshold, dim=0, dtype=torch.int64)
    slots = torch.arange(k, dtype=torch.int64, device=x.device)
    tie_rank = torch.clamp(slots - n_above, min=0) + 1
    first_ties = torch.searchsorted(tie_count, tie_rank)
    chosen = torch.where(slots < n_above, indices, first_ties)
    # Order by value, equal values by index: sort by index, then stably by value.
    chosen = torch.sort(chosen).values
    order = torch.sort(x[chosen], descending=True, stable=True).indices
    return chosen[order]


def softplus(x: Any, /) -> Any:
    """``log(1 + exp(x))`` without overflow.

    ``torch.nn.functional.softplus`` returns ``x`` itself above ``x = 20``, which drops a term of
    at most ``exp(-20) ~ 2e-9``: below half an ulp of ``x`` in float32 and lower precisions, so
    exact there, but visible in float64, which therefore uses ``logaddexp(x, 0)``.
    """
    if x.dtype == torch.float64:
        return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))
    return F.softplus(x)


def is_lazy(x: Any, /) -> bool:
    """Whether ``x``'s values cannot be read now: under ``torch.compile``, or a meta/fake tensor."""
    if torch.compiler.is_compiling():
        return True
    if not isinstance(x, torch.Tensor):
        return False
    return bool(x.is_meta) or type(x).__name__ == "FakeTensor"


def sum_softplus(x: Any, scale: Any, bias: Any, /) -> Any:
    """Column sums of ``softplus(scale * x + bias)`` for 2-D ``x``."""
    z = torch.mul(x, scale)
    z = z + bias
    return torch.sum(softplus(z), dim=0)


def logsumexp_columns(x: Any, scale: Any, /) -> Any:
    """Column log-sum-exp of ``scale * x`` for 2-D ``x`` (``torch.logsumexp``, max-shifted)."""
    return torch.logsumexp(torch.mul(x, scale), dim=0)
