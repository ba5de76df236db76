"""Nested batches: take the same examples from every tensor of a tuple/list/dict/dataclass tree.

A *batch* is a tensor whose first dimension indexes examples, or any nesting of tuples (named
tuples included), lists, dicts and dataclasses whose leaves are such tensors. NumPy arrays are
indexed like tensors; lists of strings or numbers (what ``default_collate`` makes of string
fields) are per-example sequences too. Other leaves (``None``, scalars) are passed through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from jestcore.backends.torch import is_lazy

__all__ = ["batch_size_of", "concat_batches", "leaves", "map_batch", "take_batch"]

_SCALARS = (str, bytes, int, float, bool, complex)


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _is_sequence_leaf(x: Any) -> bool:
    """A list or tuple of plain scalars (e.g. collated strings): one value per example."""
    return (
        isinstance(x, list | tuple)
        and not _is_namedtuple(x)
        and len(x) > 0
        and all(isinstance(e, _SCALARS) for e in x)
    )


def _is_array_leaf(x: Any) -> bool:
    return isinstance(x, torch.Tensor | np.ndarray) or _is_sequence_leaf(x)


def map_batch(fn: Callable[[Any], Any], batch: Any, *, path: str = "batch") -> Any:
    """Applies ``fn(leaf)`` to every per-example leaf of ``batch``, keeping the structure.

    Args:
        fn: Called on each tensor, NumPy array or sequence of scalars.
        batch: A tensor or a nesting of tuples, lists, dicts and dataclasses.
        path: The name of ``batch`` in error messages.

    Returns:
        A batch of the same structure and container types.
    """
    if _is_array_leaf(batch):
        return fn(batch)
    if isinstance(batch, dict):
        return type(batch)((k, map_batch(fn, v, path=f"{path}[{k!r}]")) for k, v in batch.items())
    if _is_namedtuple(batch):
        return type(batch)(
            *(
                map_batch(fn, v, path=f"{path}.{f}")
                for f, v in zip(batch._fields, batch, strict=True)
            )
        )
    if isinstance(batch, list | tuple):
        return type(batch)(map_batch(fn, v, path=f"{path}[{i}]") for i, v in enumerate(batch))
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {
            f.name: map_batch(fn, getattr(batch, f.name), path=f"{path}.{f.name}")
            for f in dataclasses.fields(batch)
            if f.init
        }
        return dataclasses.replace(batch, **changes)
    return batch


def leaves(batch: Any, *, path: str = "batch") -> Iterator[tuple[str, Any]]:
    """The ``(path, leaf)`` pairs of the per-example leaves of ``batch``, in order."""
    if _is_array_leaf(batch):
        yield path, batch
    elif isinstance(batch, dict):
        for k, v in batch.items():
            yield from leaves(v, path=f"{path}[{k!r}]")
    elif _is_namedtuple(batch):
        for f, v in zip(batch._fields, batch, strict=True):
            yield from leaves(v, path=f"{path}.{f}")
    elif isinstance(batch, list | tuple):
        for i, v in enumerate(batch):
            yield from leaves(v, path=f"{path}[{i}]")
    elif dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        for f in dataclasses.fields(batch):
            yield from leaves(getattr(batch, f.name), path=f"{path}.{f.name}")


def _leaf_len(leaf: Any) -> int:
    if isinstance(leaf, torch.Tensor | np.ndarray):
        if leaf.ndim == 0:
            raise ValueError("a 0-d tensor has no example dimension")
        return int(leaf.shape[0])
    return len(leaf)


def batch_size_of(batch: Any, *, name: str = "batch") -> int:
    """The number of examples in ``batch``: the common first dimension of all its leaves.

    Raises:
        TypeError: If ``batch`` has no tensor, array or sequence leaf.
        ValueError: If two leaves disagree on the number of examples, or a leaf is 0-d.
    """
    sizes: dict[str, int] = {}
    for path, leaf in leaves(batch, path=name):
        try:
            sizes[path] = _leaf_len(leaf)
        except ValueError as e:
            raise ValueError(f"{path} must have a first (example) dimension: {e}") from None
    if not sizes:
        raise TypeError(
            f"{name} must be a tensor or a nesting of tuples, lists, dicts and dataclasses of "
            f"tensors, got {type(batch).__name__} with no tensor inside"
        )
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"every tensor in {name} must have the same first dimension (the examples), got "
            + ", ".join(f"{p}: {s}" for p, s in sizes.items())
        )
    return next(iter(sizes.values()))


def check_positions(name: str, indices: Any, n: int, *, of: str) -> None:
    """Refuses anything but a 1-D integer tensor of positions in ``[0, n)``.

    The values are read on the host once (a synchronisation on an accelerator), unless they
    cannot be (meta tensors, under ``torch.compile``). Negative positions are refused: they
    would count from the end, which a selection never means.

    Args:
        name: The argument's name in messages.
        indices: The positions.
        n: The number of examples they index.
        of: What the ``n`` examples are, for messages (e.g. ``"the batch's 10 examples"``).

    Raises:
        TypeError: If ``indices`` is not an integer tensor.
        ValueError: If it is not 1-D or holds a position outside ``[0, n)``.
    """
    integer = isinstance(indices, torch.Tensor) and not (
        indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool
    )
    if not integer:
        got = (
            f"dtype {indices.dtype}"
            if isinstance(indices, torch.Tensor)
            else type(indices).__name__
        )
        raise TypeError(f"{name} must be an integer tensor, got {got}")
    if indices.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(indices.shape)}")
    if is_lazy(indices) or indices.shape[0] == 0:
        return
    bad = (indices < 0) | (indices >= n)
    if bool(bad.any()):
        i = int(torch.argmax(bad.to(torch.int8)))
        raise ValueError(
            f"{name} must hold positions in [0, {n}) ({of}), but {name}[{i}] is {int(indices[i])}"
        )


def take_batch(batch: Any, indices: torch.Tensor) -> Any:
    """The examples ``indices`` of every leaf of ``batch``, in that order.

    Tensors are indexed on their own device (``indices`` is moved there, asynchronously when
    possible); NumPy arrays and sequences of scalars need the indices on the host, which
    synchronises with the device once. The indices are checked first, which reads them on the
    host once (:func:`select_batch <jestcore.adapters.torch.select_batch>` takes its own,
    valid by construction, without that read).

    Args:
        batch: A tensor or nesting of containers of tensors (see the module docstring).
        indices: 1-D integer tensor of example positions in ``[0, N)``; negative positions are
            refused, not counted from the end.

    Returns:
        A batch of the same structure whose leaves hold ``len(indices)`` examples.

    Raises:
        TypeError: If ``indices`` is not an integer tensor, or ``batch`` holds no tensor.
        ValueError: If ``indices`` is not 1-D or holds a position outside ``[0, N)`` (the
            message names ``indices`` and the batch's size ``N``), or the leaves of
            ``batch`` disagree on ``N``.
    """
    n = batch_size_of(batch)
    check_positions("indices", indices, n, of=f"the batch's {n} examples")
    return take_rows(batch, indices)


def take_rows(batch: Any, indices: torch.Tensor) -> Any:
    """:func:`take_batch` without its checks, for indices valid by construction."""
    host: list[np.ndarray] = []

    def host_indices() -> np.ndarray:
        if not host:
            host.append(indices.detach().cpu().numpy())
        return host[0]

    def take(leaf: Any) -> Any:
        if isinstance(leaf, torch.Tensor):
            idx = indices if indices.device == leaf.device else indices.to(leaf.device)
            return leaf.index_select(0, idx)
        if isinstance(leaf, np.ndarray):
            return leaf[host_indices()]
        picked = [leaf[i] for i in host_indices().tolist()]
        return type(leaf)(picked)

    return map_batch(take, batch)


def concat_batches(batches: list[Any]) -> Any:
    """Concatenates batches of one structure along the example dimension.

    0-d tensors and non-example leaves (Python numbers, ``None``) are taken from the first
    batch: they are per-batch values, such as a model's temperature.
    """
    first = batches[0]
    if isinstance(first, torch.Tensor):
        if first.ndim == 0:
            return first
        return torch.cat(batches, dim=0)
    if isinstance(first, np.ndarray):
        return first if first.ndim == 0 else np.concatenate(batches, axis=0)
    if _is_sequence_leaf(first):
        return type(first)(e for b in batches for e in b)
    if isinstance(first, dict):
        return type(first)((k, concat_batches([b[k] for b in batches])) for k in first)
    if _is_namedtuple(first):
        return type(first)(*(concat_batches([b[i] for b in batches]) for i in range(len(first))))
    if isinstance(first, list | tuple):
        return type(first)(concat_batches([b[i] for b in batches]) for i in range(len(first)))
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        changes = {
            f.name: concat_batches([getattr(b, f.name) for b in batches])
            for f in dataclasses.fields(first)
            if f.init
        }
        return dataclasses.replace(first, **changes)
    return first
