"""A synthetic super-batch of image-text embeddings with planted mismatched pairs.

Pairs belong to ``n_classes`` clusters. A fraction of pairs is *mismatched* (the caption
describes another class), the way web data is noisy. The reference model (trained on curated
data) embeds every pair well; the learner, early in training, has learnt only some classes.
Good selection keeps clean pairs of the classes the learner has not learnt yet and drops the
mismatched ones, which the reference recognises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import jestcore

__all__ = ["SyntheticSuperBatch", "compare_selection", "make_superbatch"]


@dataclass(frozen=True)
class SyntheticSuperBatch:
    """Learner and reference embeddings of one super-batch, with what was planted.

    Attributes:
        learner: The learner's embeddings.
        reference: The reference model's embeddings.
        mismatched: ``(N,)`` bool, the pairs whose caption belongs to another class.
        learnt: ``(N,)`` bool, the pairs whose class the learner has already learnt.
    """

    learner: jestcore.PairEmbeddings
    reference: jestcore.PairEmbeddings
    mismatched: np.ndarray
    learnt: np.ndarray


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_superbatch(
    n: int = 4096,
    *,
    dim: int = 64,
    n_classes: int = 1000,
    mismatch_rate: float = 0.3,
    seed: int = 0,
) -> SyntheticSuperBatch:
    """Draws a synthetic super-batch of ``n`` image-text pairs.

    Args:
        n: Number of pairs.
        dim: Embedding width.
        n_classes: Number of clusters; the learner has learnt the first half.
        mismatch_rate: Fraction of pairs whose caption comes from another class.
        seed: NumPy seed.

    Returns:
        The embeddings of both models and the planted labels.
    """
    if not 0.0 <= mismatch_rate < 1.0:
        raise ValueError(f"mismatch_rate must be in [0, 1), got {mismatch_rate}")
    if n < 2 or n_classes < 2:
        raise ValueError(f"n and n_classes must be at least 2, got n={n}, n_classes={n_classes}")
    rng = np.random.default_rng(seed)

    def noise(scale: float | np.ndarray) -> np.ndarray:  # per-pair norm about ``scale``
        return scale * rng.normal(size=(n, dim)) / np.sqrt(dim)

    centres = _unit(rng.normal(size=(n_classes, dim)))
    label = rng.integers(n_classes, size=n)
    mismatched = rng.random(n) < mismatch_rate
    caption = np.where(mismatched, (label + rng.integers(1, n_classes, size=n)) % n_classes, label)
    image = _unit(centres[label] + noise(0.3))
    text = _unit(centres[caption] + noise(0.3))
    reference = jestcore.PairEmbeddings(
        _unit(image + noise(0.1)),
        _unit(text + noise(0.1)),
        10.0,
        -5.0,
    )
    learnt = label < n_classes // 2
    # The learner embeds images of classes it has not learnt yet almost at random.
    learner_image = _unit(image + noise(np.where(learnt, 0.1, 3.0)[:, None]))
    learner = jestcore.PairEmbeddings(learner_image, _unit(text + noise(0.1)), 10.0, -5.0)
    return SyntheticSuperBatch(learner, reference, mismatched, learnt)


def compare_selection(
    batch: SyntheticSuperBatch,
    n_select: int,
    *,
    n_chunks: int = 16,
    gain: float = 100.0,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Selects ``n_select`` pairs by uniform, independent and joint learnability selection.

    Args:
        batch: The super-batch.
        n_select: Sub-batch size.
        n_chunks: Chunks of joint selection.
        gain: The score gain of independent and joint selection (see
            :func:`jestcore.joint_select`).
        seed: Seed of the portable generator.

    Returns:
        For each method, the fraction of mismatched pairs kept, the fraction of clean pairs of
        not-yet-learnt classes kept, and the selected batch's total learnability.
    """
    n = batch.mismatched.shape[0]
    learner, reference = batch.learner, batch.reference
    chosen = {
        "uniform": jestcore.independent_select(np.zeros(n, np.float32), n_select, seed=seed),
        # One chunk: each pair's own learnability, the diagonal (independent selection).
        "independent": jestcore.joint_select_embeddings(
            learner, reference, n_select, n_chunks=1, gain=gain, seed=seed
        ),
        "joint": jestcore.joint_select_embeddings(
            learner, reference, n_select, n_chunks=n_chunks, gain=gain, seed=seed
        ),
    }
    unlearnt_clean = ~batch.learnt & ~batch.mismatched
    return {
        name: {
            "mismatched_kept": float(batch.mismatched[idx].mean()),
            "unlearnt_clean_kept": float(unlearnt_clean[idx].mean()),
            "batch_learnability": float(jestcore.batch_score_embeddings(learner, reference, idx)),
        }
        for name, idx in chosen.items()
    }
