"""Per-framework primitives that the array API standard lacks, picked from the inputs' namespace.

Every backend module (``numpy``, ``generic``, and the native ``torch`` and ``jax`` modules when
present) exposes the same names with the same signatures:

* ``top_k(x, k, /)``: indices of the ``k`` largest entries of a 1-D array, in descending order of
  value, ties to the lower index.
* ``softplus(x, /)``: ``log(1 + exp(x))``, numerically stable.
* ``sum_softplus(x, scale, bias, /)``: column sums of ``softplus(scale * x + bias)`` for 2-D ``x``.
* ``logsumexp_columns(x, scale, /)``: column log-sum-exp of ``scale * x`` for 2-D ``x``,
  shifted by each column's maximum so that it never overflows.
* ``is_lazy(x, /)``: whether ``x`` is being traced (``jax.jit``, ``torch.compile``), so values
  cannot be inspected.
* ``chunk_loop(choose, advance, carry, sizes, noise, /)``: the chunk loop of joint selection
  (chunk ``k``: ``idx = choose(carry, noise[k], sizes[k])``, then ``carry = advance(carry,
  idx)``); a Python loop, compiled as ``lax.scan`` by the JAX module.
* ``block_loop(fn, acc, idx, block_size, /)``: ``acc = fn(acc, block)`` over nearly equal
  blocks of at most ``block_size`` entries of ``idx``; a Python loop, ``lax.scan`` on JAX, so
  that ``block_size`` bounds the temporaries under ``jax.jit`` too.
* ``default_block_size(n, /)``: that bound when the caller gives none, at N = ``n`` (smaller
  on JAX, where XLA keeps several blocks' temporaries alive).

:func:`get_backend` resolves a namespace to its module lazily: detecting a backend never imports a
framework that the caller has not imported, and a namespace with no native module gets the
pure array-API ``generic`` module. The algorithm itself (what the loops do) lives once, in the
specification; these modules only say how to run it.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

import array_api_compat

__all__ = ["BACKEND_NAMES", "get_backend", "get_backend_module"]

#: Backend modules, by name; each one mirrors the others.
BACKEND_NAMES = ("generic", "numpy", "torch", "jax")

_DETECTORS = (
    ("numpy", array_api_compat.is_numpy_namespace),
    ("torch", array_api_compat.is_torch_namespace),
    ("jax", array_api_compat.is_jax_namespace),
)
_cache: dict[str, ModuleType] = {}


def get_backend(xp: Any) -> ModuleType:
    """The backend module for array namespace ``xp`` (native if one exists, else ``generic``).

    Args:
        xp: An array-API namespace, e.g. from ``array_api_compat.array_namespace(x)``.

    Returns:
        A module with the functions listed in this package's docstring.
    """
    name = next((name for name, is_ns in _DETECTORS if is_ns(xp)), "generic")
    if name not in _cache:
        _cache[name] = get_backend_module(name)
    return _cache[name]


def get_backend_module(name: str) -> ModuleType:
    """The backend module called ``name`` (one of :data:`BACKEND_NAMES`), imported on demand."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"name must be one of {BACKEND_NAMES}, got {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


def _preload() -> None:
    """Loads the native backends of frameworks that are already imported.

    Importing a module inside ``torch.compile(fullgraph=True)`` breaks the graph, so a backend
    is best loaded before the first compiled call; this never imports a framework itself.
    """
    for name in ("torch", "jax"):
        if name in sys.modules and name not in _cache:
            _cache[name] = get_backend_module(name)


_preload()
