"""A literal, independent transcription of JEST's Algorithm 1 (Evans et al., arXiv 2406.17711).

Written from the paper and the design, not from ``jestcore``: plain NumPy float64, Python loops,
no shared code. Slow on purpose (O(n_chunks * N^2) per selection): it is the reference that the
library's incremental and streaming selections must reproduce.

* :func:`dense_scores` builds the N x N score matrix from embeddings with an explicit
  ``-log(sigmoid(.))`` (as ``logaddexp(0, -x)``).
* :func:`select` is Algorithm 1: each chunk re-sums the masked score matrix
  (``logits_m = S_mm + sum_j is_sampled_j * (S_jm + S_mj)``), sets selected items to -inf, adds that
  chunk's own row of Gumbel noise and takes the top-k, ordering each chunk by descending perturbed
  logit with ties to the lower index. Its ``gain`` is Algorithm 2's ``softmax_score_gain``: the
  logits are multiplied by it before the noise is added (``gain=1`` is Algorithm 1 as printed).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def split_chunks(n_select: int, n_chunks: int) -> list[int]:
    """Chunk sizes: ``n_select`` in ``n_chunks`` parts differing by at most one, larger first."""
    sizes = [0] * n_chunks
    for i in range(n_select):  # deal the items out one by one, round robin
        sizes[i % n_chunks] += 1
    return sizes


def neg_log_sigmoid(x: np.ndarray) -> np.ndarray:
    """``-log(sigmoid(x)) = log(1 + exp(-x))``, as ``logaddexp(0, -x)`` (no overflow)."""
    return np.logaddexp(0.0, -np.asarray(x, dtype=np.float64))


def pairwise_sigmoid_loss(image: Any, text: Any, scale: Any, bias: Any) -> np.ndarray:
    """The SigLIP pairwise loss matrix ``l_ij = -log sigmoid(z_ij (scale <image_i, text_j> + b))``.

    Written entry-wise with an explicit label matrix ``z`` (+1 on the diagonal, -1 elsewhere).
    """
    image = np.asarray(image, dtype=np.float64)
    text = np.asarray(text, dtype=np.float64)
    n = image.shape[0]
    dots = np.einsum("id,jd->ij", image, text)
    z = -np.ones((n, n))
    for i in range(n):
        z[i, i] = 1.0
    logits = float(scale) * dots + float(bias)
    return neg_log_sigmoid(z * logits)


def dense_scores(learner: Any, reference: Any, score: str) -> np.ndarray:
    """The score matrix of ``score`` from two models' ``(image, text, scale, bias)``.

    ``learnability = L - R``, ``hard_learner = L``, ``easy_reference = -R`` (design, section 1).
    """
    if score == "learnability":
        return pairwise_sigmoid_loss(*learner) - pairwise_sigmoid_loss(*reference)
    if score == "hard_learner":
        return pairwise_sigmoid_loss(*learner)
    if score == "easy_reference":
        return -pairwise_sigmoid_loss(*reference)
    raise ValueError(score)


def conditional_logits(scores: np.ndarray, is_sampled: np.ndarray) -> np.ndarray:
    """Algorithm 1's logits: ``S_mm + sum_j is_sampled_j (S_jm + S_mj)``, masked, -inf if taken.

    Re-sums the whole masked matrix, as the paper's listing does.
    """
    n = scores.shape[0]
    logits_ii = np.array([scores[m, m] for m in range(n)])
    logits_ij = (scores * is_sampled.reshape(n, 1)).sum(axis=0)  # sum_j sampled S_jm
    logits_ji = (scores * is_sampled.reshape(1, n)).sum(axis=1)  # sum_j sampled S_mj
    logits = logits_ii + logits_ij + logits_ji
    return np.where(is_sampled > 0, -np.inf, logits)


def top_k_ordered(values: np.ndarray, k: int) -> list[int]:
    """The k largest entries' indices, descending, ties to the lower index (plain Python sort)."""
    order = sorted(range(values.shape[0]), key=lambda i: (-values[i], i))
    return order[:k]


def select(
    scores: Any,
    n_select: int,
    n_chunks: int,
    noise: Any = None,
    *,
    gain: float,
) -> np.ndarray:
    """Algorithm 1 with explicit noise (``noise=None``: greedy, i.e. zero noise).

    Args:
        scores: ``(N, N)`` score matrix (converted to float64).
        n_select: Number of items to select.
        n_chunks: Number of chunks.
        noise: ``(n_chunks, N)`` Gumbel noise, row ``k`` for chunk ``k`` (converted to float64).
        gain: Algorithm 2's score gain: every chunk ranks ``gain * logits + noise``.

    Returns:
        The selected indices (int64), chunk by chunk.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    is_sampled = np.zeros(n)
    out: list[int] = []
    for k, size in enumerate(split_chunks(n_select, n_chunks)):
        if k == 0:
            logits = np.array([scores[m, m] for m in range(n)])
        else:
            logits = conditional_logits(scores, is_sampled)
        logits = float(gain) * logits  # Algorithm 2: scores times softmax_score_gain
        if noise is not None:
            logits = logits + np.asarray(noise, dtype=np.float64)[k]
        chunk = top_k_ordered(logits, size)
        for i in chunk:
            is_sampled[i] = 1.0
        out.extend(chunk)
    return np.array(out, dtype=np.int64)


def select_independent(scores: Any, n_select: int, noise: Any = None, *, gain: float) -> np.ndarray:
    """Independent Gumbel top-k of ``gain`` times a score vector (one chunk)."""
    scores = float(gain) * np.asarray(scores, dtype=np.float64)
    if noise is not None:
        scores = scores + np.asarray(noise, dtype=np.float64)
    return np.array(top_k_ordered(scores, n_select), dtype=np.int64)
