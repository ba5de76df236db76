"""The joint score of a selected batch: how good a selection is, by the measure JEST optimises."""

from __future__ import annotations

from typing import Any

from jestcore import _validation as v
from jestcore._namespace import device_of, namespace_of, same_device
from jestcore.backends import get_backend
from jestcore.scores import pair_losses
from jestcore.streaming import (
    BLOCK_ELEMENTS,
    PairEmbeddings,
    _build_terms,
    _check_embeddings,
    _SoftmaxTerms,
    _Terms,
    check_loss,
)

__all__ = ["batch_score", "batch_score_embeddings"]


def _check_indices(indices: Any, n: int, xp: Any, backend: Any) -> Any:
    """``indices`` must be a non-empty 1-D integer array of distinct entries in ``[0, n)``.

    Returns:
        The indices as int32 or int64: other integer dtypes are converted (PyTorch indexes only
        with those, and reads a ``uint8`` tensor as a mask).
    """
    if not hasattr(indices, "dtype") or not xp.isdtype(indices.dtype, "integral"):
        raise TypeError(
            f"indices must be an integer array, got {getattr(indices, 'dtype', indices)!r}"
        )
    if indices.ndim != 1 or indices.shape[0] == 0:
        raise ValueError(f"indices must be a non-empty 1-D array, got shape {tuple(indices.shape)}")
    if indices.dtype not in (xp.int32, xp.int64):
        # To the signed type of the same width or int32: narrower types convert exactly, and
        # an unsigned value past the signed range becomes negative, refused below (PyTorch
        # implements no comparison on most unsigned types).
        wide = xp.iinfo(indices.dtype).bits == 64
        indices = xp.astype(indices, xp.int64 if wide else xp.int32)
    if not backend.is_lazy(indices):
        if bool(xp.any(indices < 0)) or bool(xp.any(indices >= n)):
            raise ValueError(f"indices must lie in [0, {n}), got values outside it")
        s = xp.sort(indices)
        if indices.shape[0] > 1 and bool(xp.any(s[1:] == s[:-1])):
            raise ValueError("indices must be distinct: a batch holds each example once")
    return indices


def batch_score(scores: Any, indices: Any, /) -> Any:
    """The joint score ``sum_{i, j in B} S_ij`` of the batch ``B = indices``.

    This is the total that joint selection greedily grows: the batch's learnability (or
    learner loss, or negative reference loss) under the pairwise sigmoid loss.

    Args:
        scores: ``(N, N)`` real floating score matrix.
        indices: 1-D integer array (signed or unsigned) of distinct indices into ``scores``.

    Returns:
        A 0-d array of ``scores``' dtype; float32 for float16 and bfloat16 scores, which are
        summed in float32 (a float16 sum of 65,536 ones would overflow).

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
    indices = _check_indices(indices, n, xp, backend)
    same_device({"scores": scores, "indices": indices})
    v.check_finite("scores", scores, xp, backend)
    rows = xp.take(scores, indices, axis=0)
    total = xp.sum(xp.take(rows, indices, axis=1), dtype=xp.result_type(scores.dtype, xp.float32))
    return xp.asarray(total)


def batch_score_embeddings(
    learner: PairEmbeddings | None,
    reference: PairEmbeddings | None,
    indices: Any,
    /,
    *,
    score: str = "learnability",
    loss: str = "sigmoid",
    block_size: int | None = None,
) -> Any:
    """:func:`batch_score` of the materialised score matrix, computed from embeddings.

    Never forms the ``N x N`` (nor the ``b x b``) matrix: the batch's pairwise terms are summed
    in blocks of ``block_size`` rows.

    With ``loss="softmax"`` the score is that of the softmax-contrastive (CLIP) loss, with the
    same convention, a sum over the batch: each model's loss of the batch ``B`` is
    ``sum_{i in B} [-L_ii + (logsumexp_{j in B} L_ij + logsumexp_{j in B} L_ji) / 2]`` with
    ``L_ij = scale * <image_i, text_j>`` (the symmetric cross-entropy, each direction weighted
    one half; ``b`` times CLIP's mean loss; a bias cancels and is left out), and the score
    combines the two models' losses as ``score`` says. The row blocks' log-sum-exps are merged
    as in :func:`~jestcore.joint_select_embeddings`.

    Args:
        learner: The learner's :class:`~jestcore.PairEmbeddings` (may be ``None`` for
            ``score="easy_reference"``).
        reference: The reference's :class:`~jestcore.PairEmbeddings` (may be ``None`` for
            ``score="hard_learner"``).
        indices: 1-D integer array (signed or unsigned) of distinct indices, the batch.
        score: ``"learnability"``, ``"hard_learner"`` or ``"easy_reference"``.
        loss: ``"sigmoid"`` (SigLIP) or ``"softmax"`` (CLIP / InfoNCE).
        block_size: Rows of the batch multiplied at once (default: about 2**24 elements).

    Returns:
        A 0-d float32 array (float64 when an input is float64).

    Example:
        >>> import numpy as np
        >>> e = PairEmbeddings(np.eye(2), np.eye(2), 1.0, 0.0)
        >>> idx = np.array([0, 1])
        >>> round(float(batch_score_embeddings(e, None, idx, score="hard_learner",
        ...                                    loss="softmax")), 4)  # 2 * log(1 + e**-1)
        0.6265
    """
    check_loss(loss)
    xp, n, _, models = _check_embeddings(learner, reference, score, indices=indices)
    backend = get_backend(xp)
    indices = _check_indices(indices, n, xp, backend)
    b = indices.shape[0]
    if block_size is None:
        block_size = max(1, BLOCK_ELEMENTS // b)
    block_size = v.check_int("block_size", block_size, low=1)
    model_total = _softmax_batch_total if loss == "softmax" else _model_batch_total
    total = None
    for t in _build_terms(models, xp, loss):
        part = t.sign * model_total(t, indices, block_size, xp, backend)
        total = part if total is None else total + part
    return xp.asarray(total)


def _model_batch_total(t: _Terms, idx: Any, block_size: int, xp: Any, backend: Any) -> Any:
    """One model's ``sum_{i, j in idx} l_ij``, in blocks of ``block_size`` rows of the batch.

    Each block's losses come from :func:`~jestcore.scores.pair_losses`, which takes a matching
    pair's loss from its own logit: adding the diagonal as negative pairs and correcting it
    afterwards would subtract ``b`` terms of size ``~scale`` from a total of tiny losses.
    """
    image_b = xp.take(t.image, idx, axis=0)
    text_bt = xp.matrix_transpose(xp.take(t.text, idx, axis=0))
    b = idx.shape[0]
    total = xp.asarray(0.0, dtype=image_b.dtype, device=device_of(image_b))
    for start in range(0, b, block_size):
        logits = t.scale * (image_b[start : min(start + block_size, b), ...] @ text_bt) + t.bias
        total = total + xp.sum(pair_losses(logits, start, xp, backend))
    return total


def _softmax_batch_total(t: _Terms, idx: Any, block_size: int, xp: Any, backend: Any) -> Any:
    """One model's softmax loss of the batch ``idx``, summed over its examples.

    ``sum_i [-L_ii + (lse_j L_ij + lse_j L_ji) / 2]`` over ``i, j in idx``: the batch's rows,
    ``block_size`` at a time (the backend's ``block_loop``), update a running log-sum-exp per
    example and direction, as in selection, so no ``b x b`` matrix is formed.
    """
    image_b = xp.take(t.image, idx, axis=0)
    text_b = xp.take(t.text, idx, axis=0)
    batch = _SoftmaxTerms(
        PairEmbeddings(image_b, text_b, t.scale, 0.0), 1, image_b.dtype, xp, backend
    )
    rows = xp.arange(idx.shape[0], device=device_of(image_b))
    total = xp.sum(batch.diagonal())  # sum of u_i = -L_ii
    for side in (0, 1):

        def add(acc: Any, block: Any, side: int = side) -> Any:
            return xp.logaddexp(acc, batch.products(batch.rows(block, side), side))

        empty = xp.full((idx.shape[0],), -xp.inf, dtype=image_b.dtype, device=device_of(image_b))
        total = total + 0.5 * xp.sum(backend.block_loop(add, empty, rows, block_size))
    return total
