"""Pytree batches: gathering the selected examples from every leaf."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jestcore.adapters.jax.selection import _backend, check_jax

__all__ = ["gather", "leading_size"]


def leading_size(tree: Any) -> int:
    """The common leading (batch) size of every leaf of ``tree``.

    Raises:
        TypeError: If a leaf is not an array (e.g. a Python number or string).
        ValueError: If ``tree`` has no leaves, a leaf is 0-d, or the leading sizes differ.
    """
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not leaves:
        raise ValueError("the batch must be a pytree with at least one array leaf, got none")
    sizes = {}
    for path, leaf in leaves:
        name = "batch" + jax.tree_util.keystr(path)
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise TypeError(f"{name} must be an array, got {type(leaf).__name__}")
        check_jax(**{name: leaf})
        if leaf.ndim == 0:
            raise ValueError(f"{name} must have a leading batch axis, got a 0-d array")
        sizes[name] = leaf.shape[0]
    if len(set(sizes.values())) > 1:
        raise ValueError(f"every leaf of the batch must have the same leading size, got {sizes}")
    return next(iter(sizes.values()))


def gather(tree: Any, indices: Any, /) -> Any:
    """The examples ``indices`` of a batch: ``x[indices]`` for every leaf ``x`` of ``tree``.

    Works on any pytree (arrays, tuples, dicts, dataclasses registered as pytrees...) whose
    leaves share the leading batch axis, eagerly and under ``jax.jit``.

    Args:
        tree: The super-batch, a pytree of arrays with a common leading size N.
        indices: A 1-D integer array of positions in ``[0, N)``, e.g. from
            :func:`~jestcore.adapters.jax.joint_select_embeddings`.

    Returns:
        The same pytree with leading size ``len(indices)``.

    Raises:
        TypeError: If a leaf is not an array, or ``indices`` is not a 1-D integer array.
        ValueError: If the leaves' leading sizes differ, or (outside ``jax.jit``) an index is
            outside ``[0, N)``.

    Example:
        >>> import jax.numpy as jnp
        >>> batch = {"x": jnp.arange(6.0).reshape(3, 2), "y": jnp.array([7, 8, 9])}
        >>> sub = gather(batch, jnp.array([2, 0]))
        >>> sub["x"].tolist(), sub["y"].tolist()
        ([[4.0, 5.0], [0.0, 1.0]], [9, 7])
    """
    n = leading_size(tree)
    check_jax(indices=indices)
    if (
        not hasattr(indices, "ndim")
        or indices.ndim != 1
        or not jnp.issubdtype(indices.dtype, jnp.integer)
    ):
        shape = getattr(indices, "shape", None)
        raise TypeError(
            f"indices must be a 1-D integer array, got {type(indices).__name__}"
            + (f" of shape {tuple(shape)} and dtype {indices.dtype}" if shape is not None else "")
        )
    if not _backend.is_lazy(indices) and indices.shape[0]:
        low, high = int(jnp.min(indices)), int(jnp.max(indices))
        if low < 0 or high >= n:
            raise ValueError(
                f"indices must lie in [0, {n}) (the batch size), got values from {low} to {high}"
            )
    return jax.tree.map(lambda x: jnp.take(x, indices, axis=0, mode="clip"), tree)
