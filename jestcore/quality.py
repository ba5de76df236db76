"""The joint score of a selected batch: how good a selection is, by the measure JEST optimises."""

from __future__ import annotations

from typing import Any

from jestcore import _validation as v
from jestcore._namespace import namespace_of, same_device
from jestcore.backends import get_backend
from jestcore.streaming import BLOCK_ELEMENTS, PairEmbeddings, _build_terms, _check_embeddings

__all__ = ["batch_score", "batch_score_embeddings"]


def _check_indices(indices: Any, n: int, xp: Any, backend: Any) -> int:
    """``indices`` must be a non-empty 1-D integer array of distinct entries in ``[0, n)``."""
    if not hasattr(indices, "dtype") or not xp.isdtype(indices.dtype, "integral"):
        raise TypeError(
            f"indices must be an integer array, got {getattr(indices, 'dtype', indices)!r}"
        )
    if indices.ndim != 1 or indices.shape[0] == 0:
        raise ValueError(f"indices must be a non-empty 1-D array, got shape {tuple(indices.shape)}")
    if not backend.is_lazy(indices):
        if bool(xp.any(indices < 0)) or bool(xp.any(indices >= n)):
            raise ValueError(f"indices must lie in [0, {n}), got values outside it")
        s = xp.sort(indices)
        if indices.shape[0] > 1 and bool(xp.any(s[1:] == s[:-1])):
            raise ValueError("indices must be distinct: a batch holds each example once")
    return indices.shape[0]


def batch_score(scores: Any, indices: Any, /) -> Any:
    """The joint score ``sum_{i, j in B} S_ij`` of the batch ``B = indices``.

    This is the total that joint selection greedily grows: the batch's learnability (or
    learner loss, or negative reference loss) under the pairwise sigmoid loss.

    Args:
        scores: ``(N, N)`` real floating score matrix.
        indices: 1-D integer array of distinct indices into ``scores``.

    Returns:
        A 0-d array of ``scores``' dtype.

    Example:
        >>> import numpy as np
        >>> S = np.arange(9.0).reshape(3, 3)
        >>> float(batch_score(S, np.array([0, 2])))
        16.0
    """
    xp = namespace_of(scores, indices, name="scores, indices")
    v.check_floating("scores", scores, xp, ndim=2)
    n = scores.shape[0]
    if scores.shape[1] != n:
        raise ValueError(f"scores must be a square (N, N) matrix, got shape {tuple(scores.shape)}")
    v.check_nonempty("scores", scores)
    backend = get_backend(xp)
    _check_indices(indices, n, xp, backend)
    same_device({"scores": scores, "indices": indices})
    v.check_finite("scores", scores, xp, backend)
    rows = xp.take(scores, indices, axis=0)
    return xp.asarray(xp.sum(xp.take(rows, indices, axis=1)))


def batch_score_embeddings(
    learner: PairEmbeddings | None,
    reference: PairEmbeddings | None,
    indices: Any,
    /,
    *,
    score: str = "learnability",
    block_size: int | None = None,
) -> Any:
    """:func:`batch_score` of the materialised score matrix, computed from embeddings.

    Never forms the ``N x N`` (nor the ``b x b``) matrix: the batch's pairwise terms are summed
    in blocks of ``block_size`` rows.

    Args:
        learner: The learner's :class:`~jestcore.PairEmbeddings` (may be ``None`` for
            ``score="easy_reference"``).
        reference: The reference's :class:`~jestcore.PairEmbeddings` (may be ``None`` for
            ``score="hard_learner"``).
        indices: 1-D integer array of distinct indices, the batch.
        score: ``"learnability"``, ``"hard_learner"`` or ``"easy_reference"``.
        block_size: Rows of the batch multiplied at once (default: about 2**24 elements).

    Returns:
        A 0-d float32 array (float64 when an input is float64).
    """
    xp, n, _, models = _check_embeddings(learner, reference, score, indices=indices)
    b = _check_indices(indices, n, xp, get_backend(xp))
    if block_size is None:
        block_size = max(1, BLOCK_ELEMENTS // b)
    block_size = v.check_int("block_size", block_size, low=1)
    terms = _build_terms(models, xp)
    total = None
    for t in terms:
        part = t.batch_total(indices, block_size)
        total = part if total is None else total + part
    return xp.asarray(total)
