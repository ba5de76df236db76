"""Per-framework primitives that the array API standard lacks, picked from the inputs' namespace.

Every backend module (``numpy``, ``generic``, and the native ``torch`` and ``jax`` modules when
present) exposes the same names with the same signatures:

* ``top_k(x, k, /)``: indices of the ``k`` largest entries of a 1-D array, in descending order of
  value, ties to the lower index.
* ``softplus(x, /)``: ``log(1 + exp(x))``, numerically stable.
* ``is_lazy(x, /)``: whether ``x`` is being traced (``jax.jit``, ``torch.compile``), so values
  cannot be inspected.

:func:`get_backend` resolves a namespace to its module lazily: detecting a backend never imports a
framework that the caller has not imported, and a namespace with no native module gets the
pure array-API ``generic`` module.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import array_api_compat

__all__ = ["BACKEND_NAMES", "get_backend"]

#: Backend modules, by name; each one mirrors the others.
BACKEND_NAMES = ("generic", "numpy")

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
    for name, is_ns in _DETECTORS:
        if name in BACKEND_NAMES and is_ns(xp):
            break
    else:
        name = "generic"
    if name not in _cache:
        _cache[name] = importlib.import_module(f"{__name__}.{name}")
    return _cache[name]
