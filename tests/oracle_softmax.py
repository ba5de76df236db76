"""A literal, independent transcription of JEST's Algorithm 3 (Evans et al., arXiv 2406.17711).

Joint selection under the softmax-contrastive (CLIP / InfoNCE) loss, written from the paper's
listing and the design (section 1, "The softmax (CLIP / InfoNCE) loss"), not from ``jestcore``:
plain NumPy float64, no shared code. Like the listing, every chunk recomputes each model's whole
N x N logit matrix and its masked log-sum-exp negatives (O(n_chunks * N^2 * d)): slow on purpose.
The listing's typo (reference logits from the learner's parameters) is corrected: each model
uses its own embeddings and temperature.

* :func:`logit_matrix`: ``L_ij = scale * <image_i, text_j> + bias`` (the bias cancels in a
  softmax; it is kept here so that tests can check that it does).
* :func:`softmax_nll`: per candidate i, the unconditional loss ``u_i = -L_ii`` and the negative
  term ``neg_i = (logsumexp_{j sampled} L_ij + logsumexp_{j sampled} L_ji) / 2``.
* :func:`select`: chunk 0 draws from ``u^learner - u^reference`` (for learnability), chunk k > 0
  from ``(u^l - u^r) + (neg^l - neg^r)`` with sampled items excluded; Gumbel top-k of
  ``gain * logits + noise[k]``, each chunk in descending perturbed logit, ties to the lower index.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def split_chunks(n_select: int, n_chunks: int) -> list[int]:
    """Chunk sizes: ``n_select`` in ``n_chunks`` parts differing by at most one, larger first."""
    sizes = [0] * n_chunks
    for i in range(n_select):
        sizes[i % n_chunks] += 1
    return sizes


def logit_matrix(model: Any) -> np.ndarray:
    """``L_ij = scale * <image_i, text_j> + bias`` (float64) of ``(image, text, scale, bias)``."""
    image, text, scale, bias = model
    image = np.asarray(image, dtype=np.float64)
    text = np.asarray(text, dtype=np.float64)
    n = image.shape[0]
    out = np.zeros((n, n))
    for i in range(n):  # row i: image i against every text j
        out[i, :] = float(scale) * (text @ image[i]) + float(bias)
    return out


def masked_logsumexp(rows: np.ndarray, is_sampled: np.ndarray) -> np.ndarray:
    """For each row r, ``log sum_{j: is_sampled[j]} exp(rows[r, j])`` (max-shifted)."""
    keep = is_sampled.reshape(1, -1) > 0
    masked = np.where(keep, rows, -np.inf)
    top = masked.max(axis=1, keepdims=True)
    return (top + np.log(np.sum(np.where(keep, np.exp(masked - top), 0.0), axis=1, keepdims=True)))[
        :, 0
    ]


def softmax_nll(model: Any, is_sampled: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(u, neg)``: each candidate's unconditional loss and negative term given the sample.

    ``neg`` is zero when nothing is sampled yet (chunk 0 uses ``u`` alone).
    """
    logits = logit_matrix(model)
    u = -np.diag(logits)
    if is_sampled is None or not is_sampled.any():
        return u, np.zeros_like(u)
    logits_ij = masked_logsumexp(logits, is_sampled)  # image i against the sampled texts j
    logits_ji = masked_logsumexp(logits.T, is_sampled)  # text i against the sampled images j
    return u, 0.5 * (logits_ij + logits_ji)


def conditional_logits(
    learner: Any, reference: Any, score: str, is_sampled: np.ndarray | None
) -> np.ndarray:
    """The logits of Algorithm 3 for ``score``, sampled items not yet excluded."""
    total = None
    for model, sign in ((learner, 1.0), (reference, -1.0)):
        if (score == "hard_learner" and sign < 0) or (score == "easy_reference" and sign > 0):
            continue
        u, neg = softmax_nll(model, is_sampled)
        part = sign * (u + neg)
        total = part if total is None else total + part
    assert total is not None
    return total


def top_k_ordered(values: np.ndarray, k: int) -> list[int]:
    """The k largest entries' indices, descending, ties to the lower index (plain Python sort)."""
    return sorted(range(values.shape[0]), key=lambda i: (-values[i], i))[:k]


def select(
    learner: Any,
    reference: Any,
    score: str,
    n_select: int,
    n_chunks: int,
    noise: Any = None,
    gain: float = 1.0,
) -> np.ndarray:
    """Algorithm 3 with explicit noise (``noise=None``: greedy, i.e. zero noise).

    Args:
        learner: The learner's ``(image, text, scale, bias)`` (unused for ``easy_reference``).
        reference: The reference's ``(image, text, scale, bias)`` (unused for ``hard_learner``).
        score: ``"learnability"``, ``"hard_learner"`` or ``"easy_reference"``.
        n_select: Number of items to select.
        n_chunks: Number of chunks.
        noise: ``(n_chunks, N)`` Gumbel noise, row ``k`` for chunk ``k``.
        gain: The factor on the logits before the noise is added (Algorithm 2's
            ``softmax_score_gain``; 1 is Algorithm 3 as printed).

    Returns:
        The selected indices (int64), chunk by chunk.
    """
    n = np.asarray((learner if learner is not None else reference)[0]).shape[0]
    is_sampled = np.zeros(n)
    out: list[int] = []
    for k, size in enumerate(split_chunks(n_select, n_chunks)):
        logits = conditional_logits(learner, reference, score, is_sampled if k else None)
        logits = np.where(is_sampled > 0, -np.inf, gain * logits)
        if noise is not None:
            logits = logits + np.asarray(noise, dtype=np.float64)[k]
        chunk = top_k_ordered(logits, size)
        for i in chunk:
            is_sampled[i] = 1.0
        out.extend(chunk)
    return np.array(out, dtype=np.int64)


def batch_loss(model: Any, indices: Any) -> float:
    """The batch's softmax-contrastive loss, summed over its examples.

    ``sum_{i in B} [-L_ii + (logsumexp_{j in B} L_ij + logsumexp_{j in B} L_ji) / 2]``: the
    symmetric (image-to-text and text-to-image) cross-entropy of CLIP, each direction weighted
    one half, summed (not averaged) over the batch.
    """
    idx = [int(i) for i in np.asarray(indices)]
    logits = logit_matrix(model)[np.ix_(idx, idx)]
    total = 0.0
    for r in range(len(idx)):
        row = logits[r, :]
        col = logits[:, r]
        lse_row = row.max() + np.log(np.sum(np.exp(row - row.max())))
        lse_col = col.max() + np.log(np.sum(np.exp(col - col.max())))
        total += -logits[r, r] + 0.5 * (lse_row + lse_col)
    return total
