"""Resolving the array namespace and device of the inputs, once, at the public boundary."""

from __future__ import annotations

from typing import Any

import array_api_compat

__all__ = ["device_of", "namespace_of"]


def namespace_of(*arrays: Any, name: str) -> Any:
    """The array-API namespace shared by ``arrays`` (Python scalars and ``None`` are skipped).

    Args:
        *arrays: The inputs.
        name: The argument name(s) to cite in errors.

    Raises:
        TypeError: If an input is not an array, or the inputs mix namespaces.
    """
    present = [a for a in arrays if a is not None and not isinstance(a, int | float)]
    if not present:
        raise TypeError(f"{name} must be arrays, got {[type(a).__name__ for a in arrays]}")
    try:
        return array_api_compat.array_namespace(*present)
    except TypeError as e:
        kinds = sorted({type(a).__module__.split(".")[0] + "." + type(a).__name__ for a in present})
        raise TypeError(
            f"{name} must be arrays of one array-API namespace, got {', '.join(kinds)} ({e})"
        ) from None


def device_of(x: Any) -> Any:
    """The device of array ``x`` (as ``array_api_compat.device``)."""
    return array_api_compat.device(x)


def same_device(arrays: dict[str, Any]) -> Any:
    """The common device of the named arrays (``None`` entries and Python numbers are skipped).

    JAX arrays not committed to a device (e.g. ``jnp.asarray(...)`` without ``device=``) are
    skipped too, as JAX moves them to wherever the computation runs, and so are arrays with no
    device (tracers under ``jax.jit``, where JAX places the computation).

    Returns:
        The device of the first committed array (of the first array if none is committed).

    Raises:
        ValueError: If two committed arrays live on different devices.
    """
    present = {k: v for k, v in arrays.items() if v is not None and not isinstance(v, int | float)}
    devices = {k: device_of(v) for k, v in present.items()}
    pinned = [
        (k, d)
        for k, d in devices.items()
        if d is not None and getattr(present[k], "committed", True)
    ]
    if not pinned:
        return next(iter(devices.values()), None)
    first = pinned[0]
    for k, d in pinned:
        if d != first[1]:
            raise ValueError(
                f"{k} is on device {d} but {first[0]} is on {first[1]}: move them together"
            )
    return first[1]
