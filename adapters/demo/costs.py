"""Compute accounting for data selection: FLOPs per step, cumulative FLOPs, cost to a target.

Framework-neutral (Python and NumPy only). The model is the paper's compute accounting
(Evans et al., arXiv 2406.17711, Appendix A.4; walked through in docs/tutorials/cost-model.md):
at every step the learner draws a super-batch of ``N = b / (1 - f)`` examples (the inverse of
:func:`jestcore.sub_batch_size`), scores it, selects ``b`` and trains on them, so one step costs

* **learner scoring** ``N * F_score`` (the learner's forward pass at the scoring resolution;
  zero when the score does not use the learner);
* **reference scoring** ``N * F_ref`` (zero when reference embeddings are cached, or when the
  score does not use the reference);
* **selection**: the arithmetic of turning embeddings into a selection (:func:`selection_flops`;
  with tiny encoders it is not negligible, so it is counted; the paper's formulas leave it out);
* **training** ``3 * b * F_train`` (forward plus backward, about twice the forward), less the
  forward pass of the ``b`` selected examples when the learner scored them at the training
  resolution: that pass is **re-used** for their gradient (the paper's convention), so training
  costs ``2 * b * F_train``. Flexi-JEST scores at a low resolution (``F_score = A * F_train``)
  and co-trains it: half the batch trains at full resolution and half at the low one, with no
  re-use, ``3 * b * F_train * (0.5 + 0.5 A)``.

So, without selection arithmetic and per trained example, uniform sampling costs ``3 F``,
JEST ``F (2 + N/b)`` (2.33x uniform at ``f = 0.8``; ``F (2 + 2 N/b)``, 4x, when the reference
is not cached) and Flexi-JEST ``3 F (0.5 + 0.5 A) + A F N / b`` (1.04-1.10x with
``A = 0.25-0.28``): :data:`CONVENTION`. ``step_flops(..., reuse_scoring_forward=False)`` gives
the accounting without re-use, for comparison.

Conventions: a multiply-add is 2 FLOPs; every elementwise operation, including ``exp`` and
``log1p``, is 1 FLOP (so :data:`SOFTPLUS_FLOPS` = 6: ``max, abs, neg, exp, log1p, add``);
comparisons, sorting, top-k and masking are not counted.

Example:
    >>> f = mlp_flops([64, 512, 32]) + mlp_flops([36, 32])  # image MLP + bag-of-words text
    >>> cost = step_flops(batch_size=64, train_flops=f, embed_dim=32)
    >>> cost.super_batch, cost.training == 3 * 64 * f
    (320, True)
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from jestcore.adapters.recipe import check_real, super_batch_size

from jestcore._validation import check_int

__all__ = [
    "AFFINE_FLOPS",
    "CONVENTION",
    "SCORES",
    "SELECTIONS",
    "SOFTPLUS_FLOPS",
    "StepFlops",
    "cumulative_flops",
    "final_value",
    "flops_to_target",
    "mlp_flops",
    "selection_flops",
    "smooth",
    "step_flops",
    "steps_to_target",
    "super_batch_size",
]

#: FLOPs of one softplus, ``max(x, 0) + log1p(exp(-|x|))``: max, abs, neg, exp, log1p, add.
SOFTPLUS_FLOPS = 6
#: FLOPs of turning a dot product into a sigmoid-loss logit, ``scale * x + bias``.
AFFINE_FLOPS = 2

#: The accounting convention, as results record it.
CONVENTION = (
    "paper A.4: training re-uses the scoring forward of the selected examples (JEST F(2 + N/b) "
    "per trained example); Flexi-JEST trains half at full and half at low resolution without "
    "re-use (3F(0.5 + 0.5A) + A F N/b); selection arithmetic counted on top"
)

#: Scores and the models they use, as (uses the learner, uses the reference).
SCORES: dict[str, tuple[bool, bool]] = {
    "learnability": (True, True),
    "hard_learner": (True, False),
    "easy_reference": (False, True),
}

#: How a selection turns embeddings into indices (see :func:`selection_flops`).
SELECTIONS: tuple[str, ...] = (
    "joint_streaming",
    "joint_matrix",
    "independent_diagonal",
    "independent_matrix",
)


def mlp_flops(layer_sizes: Sequence[int]) -> int:
    """Forward FLOPs per example of a stack of dense layers: ``sum 2 * in * out``.

    Biases and activations are not counted (they are ``O(out)`` against ``O(in * out)``). An
    embedding lookup costs nothing; a bag-of-words text encoder that projects a ``V``-word
    count vector to ``d`` is ``mlp_flops([V, d])``.

    Args:
        layer_sizes: Widths ``[in, hidden..., out]``; at least two, each >= 1.

    Returns:
        The FLOPs of one example's forward pass.

    Raises:
        TypeError: If ``layer_sizes`` is not a sequence of ints.
        ValueError: If it has fewer than two entries or one is < 1.

    Example:
        >>> mlp_flops([64, 512, 32])
        98304
    """
    if isinstance(layer_sizes, str | bytes) or not isinstance(layer_sizes, Sequence):
        raise TypeError(f"layer_sizes must be a sequence of ints, got {layer_sizes!r}")
    if len(layer_sizes) < 2:
        raise ValueError(f"layer_sizes needs at least [in, out], got {list(layer_sizes)}")
    sizes = [check_int(f"layer_sizes[{i}]", s, low=1) for i, s in enumerate(layer_sizes)]
    return sum(2 * a * b for a, b in itertools.pairwise(sizes))


def _last_chunk(n_select: int, n_chunks: int) -> int:
    """Size of the last chunk of ``jestcore.chunk_sizes(n_select, n_chunks)``."""
    return n_select // n_chunks + (n_chunks - 1 < n_select % n_chunks)


def selection_flops(
    n_super: int,
    n_select: int,
    *,
    learner_dim: int | None,
    reference_dim: int | None,
    selection: str = "joint_streaming",
    n_chunks: int = 16,
) -> int:
    """FLOPs of selecting ``n_select`` of ``n_super`` examples from the models' embeddings.

    Each model that the score uses (give its embedding width; ``None`` for a model the score
    does not use) contributes its sigmoid-loss terms. With ``R = n_select - (last chunk size)``
    rows that update the conditional logits (there is no update after the last chunk) and
    ``e = AFFINE_FLOPS + SOFTPLUS_FLOPS``, per model of width ``d``:

    ======================== ====================================================================
    ``selection``            FLOPs per model
    ======================== ====================================================================
    ``joint_streaming``      ``N (2d + e)`` diagonal + ``4 R d N`` (the products
                             ``(c x d)(d x N)`` of image-chunk x texts and text-chunk x images)
                             + ``2 R N (e + 1)`` (loss and column sum of those entries):
                             :func:`jestcore.joint_select_embeddings`
    ``joint_matrix``         ``N^2 (2d + e)``: the whole matrix of
                             :func:`jestcore.sigmoid_loss_matrix`
    ``independent_diagonal`` ``N (2d + e)``: each pair's own loss only
    ``independent_matrix``   ``N^2 (2d + e) + 2 N^2``: the matrix, then every example's row and
                             column sums (its loss within the super-batch)
    ======================== ====================================================================

    plus ``(models - 1) * M`` to combine two models' ``M`` scores (``M = N`` for streaming and
    diagonal, ``N^2`` for matrices), ``2 R N`` for the row and column sums of
    :func:`jestcore.joint_select` on a matrix, and one addition of Gumbel noise per candidate
    and chunk (``n_chunks * N`` for joint, ``N`` for independent).

    Args:
        n_super: The super-batch size ``N``.
        n_select: The sub-batch size ``b``, between 1 and ``N``.
        learner_dim: The learner's embedding width, or ``None`` if the score does not use it.
        reference_dim: The reference's embedding width, or ``None`` if unused.
        selection: One of :data:`SELECTIONS`.
        n_chunks: Chunks of joint selection, between 1 and ``n_select`` (ignored by
            independent selections).

    Returns:
        The FLOPs of one selection.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range, ``selection`` is unknown, or both widths
            are ``None``.

    Example:
        >>> selection_flops(320, 64, learner_dim=32, reference_dim=32)  # learnability
        5657920
    """
    n = check_int("n_super", n_super, low=1)
    b = check_int("n_select", n_select, low=1)
    if b > n:
        raise ValueError(f"n_select must be between 1 and n_super = {n}, got {b}")
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {list(SELECTIONS)}, got {selection!r}")
    dims = [
        check_int(name, d, low=1)
        for name, d in (("learner_dim", learner_dim), ("reference_dim", reference_dim))
        if d is not None
    ]
    if not dims:
        raise ValueError("give learner_dim and/or reference_dim (the models the score uses)")
    joint = selection.startswith("joint")
    chunks, rows = 1, 0  # independent selection: one draw, no conditional updates
    if joint:
        chunks = check_int("n_chunks", n_chunks, low=1)
        if chunks > b:
            raise ValueError(f"n_chunks must be between 1 and n_select = {b}, got {chunks}")
        rows = b - _last_chunk(b, chunks)
    e = AFFINE_FLOPS + SOFTPLUS_FLOPS
    total = 0
    for d in dims:
        if selection == "joint_streaming":
            total += n * (2 * d + e) + 4 * rows * d * n + 2 * rows * n * (e + 1)
        elif selection == "independent_diagonal":
            total += n * (2 * d + e)
        else:
            total += n * n * (2 * d + e)
            if selection == "independent_matrix":
                total += 2 * n * n
    per_score = n * n if selection.endswith("matrix") else n
    total += (len(dims) - 1) * per_score
    if selection == "joint_matrix":
        total += 2 * rows * n
    total += chunks * n
    return total


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one learner step, by part.

    Attributes:
        super_batch: The super-batch size ``N`` (``b`` for uniform sampling).
        learner_scoring: ``N * F_score``, or 0 when the score does not use the learner.
        reference_scoring: ``N * F_ref``, or 0 when cached or unused.
        selection: :func:`selection_flops`, or 0 for uniform sampling.
        training: Forward and backward of the trained examples: ``3 * b * F_train``, or
            ``2 * b * F_train`` when the scoring forward is re-used, or Flexi co-training's
            ``3 * b * ((1 - c) F_train + c F_score)``.
    """

    super_batch: int
    learner_scoring: float
    reference_scoring: float
    selection: float
    training: float

    @property
    def scoring(self) -> float:
        """Everything spent on choosing the batch: learner + reference scoring + selection."""
        return self.learner_scoring + self.reference_scoring + self.selection

    @property
    def total(self) -> float:
        """Scoring plus training."""
        return self.scoring + self.training

    def as_dict(self) -> dict[str, float]:
        """The parts, ``scoring`` and ``total`` as a JSON-ready dict."""
        return {**asdict(self), "scoring": self.scoring, "total": self.total}


def step_flops(
    *,
    batch_size: int,
    train_flops: float,
    filter_ratio: float = 0.8,
    score: str | None = "learnability",
    selection: str = "joint_streaming",
    score_flops: float | None = None,
    reference_flops: float = 0.0,
    reference_cached: bool = True,
    embed_dim: int | None = None,
    reference_dim: int | None = None,
    n_chunks: int = 16,
    co_training: float = 0.0,
    reuse_scoring_forward: bool | None = None,
) -> StepFlops:
    """FLOPs of one learner step of a selection method (Appendix A.4 of the paper).

    The demo's methods map to ``score`` and ``selection`` like this: ``uniform`` is
    ``score=None``; ``hard_learner``, ``easy_reference`` and ``jest`` are those scores with
    ``"joint_streaming"`` selection (``jest`` uses ``"learnability"``); ``independent`` is
    ``"learnability"`` with an independent selection; ``flexi_jest`` is ``jest`` with
    ``score_flops`` of the learner at the low scoring resolution and ``co_training=0.5``.

    Args:
        batch_size: The sub-batch size ``b`` trained on per step (>= 1).
        train_flops: ``F_train``, the learner's forward FLOPs per example at the training
            resolution (image and text encoders together).
        filter_ratio: ``f``; the super-batch has ``N = b / (1 - f)`` examples. Ignored for
            ``score=None`` (uniform sampling draws ``b``).
        score: ``"learnability"``, ``"hard_learner"``, ``"easy_reference"``, or ``None`` for
            uniform sampling (no scoring, no selection).
        selection: One of :data:`SELECTIONS`.
        score_flops: ``F_score``, the learner's forward FLOPs per example at the scoring
            resolution; ``None`` means ``train_flops``.
        reference_flops: ``F_ref``, the reference's forward FLOPs per example; only counted
            when ``reference_cached`` is false.
        reference_cached: Whether the reference's embeddings come from a cache (computed once
            before training; count that pass as ``offset`` in :func:`cumulative_flops`).
        embed_dim: The learner's embedding width; needed when the score uses the learner.
        reference_dim: The reference's embedding width; ``None`` means ``embed_dim``.
        n_chunks: Chunks of joint selection.
        co_training: The fraction ``c`` of the ``b`` trained examples trained at the scoring
            resolution (``score_flops``), in ``[0, 1)``: 0.5 for Flexi-JEST.
        reuse_scoring_forward: Whether training re-uses the learner's scoring forward pass of
            the selected examples (training ``2 * b * F_train``). ``None`` (the default, the
            paper's convention): when the score uses the learner at the training resolution
            (``score_flops`` is ``None`` or equal to ``train_flops``) and ``co_training`` is
            0. ``False``: never (the accounting without re-use). ``True`` needs those
            conditions.

    Returns:
        The step's :class:`StepFlops`.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range, unknown, or a needed width is missing.

    Example:
        >>> step_flops(batch_size=64, train_flops=100, score=None).total
        19200.0
        >>> jest = step_flops(batch_size=64, train_flops=100, embed_dim=8)
        >>> (jest.learner_scoring + jest.training) / 19200  # F (2 + N/b) / 3F
        2.3333333333333335
    """
    b = check_int("batch_size", batch_size, low=1)
    f_train = check_real("train_flops", train_flops, low=0.0)
    f_score = f_train if score_flops is None else check_real("score_flops", score_flops, low=0.0)
    f_ref = check_real("reference_flops", reference_flops, low=0.0)
    if not isinstance(reference_cached, bool):
        raise TypeError(f"reference_cached must be a bool, got {reference_cached!r}")
    co = check_real("co_training", co_training, low=0.0, high=1.0)
    if reuse_scoring_forward is not None and not isinstance(reuse_scoring_forward, bool):
        raise TypeError(
            f"reuse_scoring_forward must be a bool or None, got {reuse_scoring_forward!r}"
        )
    if score is None:
        super_batch_size(b, filter_ratio)  # validate it all the same
        if reuse_scoring_forward or co:
            raise ValueError("uniform sampling (score=None) neither scores nor co-trains")
        return StepFlops(b, 0.0, 0.0, 0.0, 3.0 * b * f_train)
    if score not in SCORES:
        raise ValueError(f"score must be one of {[*SCORES, None]}, got {score!r}")
    uses_learner, uses_reference = SCORES[score]
    can_reuse = uses_learner and f_score == f_train and co == 0.0
    if reuse_scoring_forward and not can_reuse:
        raise ValueError(
            "reuse_scoring_forward=True needs a score that uses the learner, scoring at the "
            "training resolution (score_flops None or train_flops), and co_training=0"
        )
    reuse = can_reuse if reuse_scoring_forward is None else reuse_scoring_forward
    training = 3.0 * b * ((1.0 - co) * f_train + co * f_score) - (b * f_train if reuse else 0.0)
    n = super_batch_size(b, filter_ratio)
    if reference_dim is None:
        reference_dim = embed_dim
    for name, needed, dim in (
        ("embed_dim", uses_learner, embed_dim),
        ("reference_dim (or embed_dim)", uses_reference, reference_dim),
    ):
        if needed and dim is None:
            raise ValueError(f'score="{score}" needs {name}, the embedding width')
    sel = selection_flops(
        n,
        b,
        learner_dim=embed_dim if uses_learner else None,
        reference_dim=reference_dim if uses_reference else None,
        selection=selection,
        n_chunks=n_chunks,
    )
    return StepFlops(
        super_batch=n,
        learner_scoring=float(n * f_score) if uses_learner else 0.0,
        reference_scoring=float(n * f_ref) if uses_reference and not reference_cached else 0.0,
        selection=float(sel),
        training=training,
    )


def _per_step(flops_per_step: float | StepFlops) -> float:
    if isinstance(flops_per_step, StepFlops):
        return flops_per_step.total
    return check_real("flops_per_step", flops_per_step, low=0.0)


def cumulative_flops(
    steps: Sequence[int] | np.ndarray,
    flops_per_step: float | StepFlops,
    *,
    offset: float = 0.0,
) -> np.ndarray:
    """Total FLOPs spent after each of ``steps`` learner steps: ``offset + step * per_step``.

    Args:
        steps: Step counts (non-negative integers), e.g. the evaluation steps of a curve.
        flops_per_step: FLOPs of one step, a number or a :class:`StepFlops` (its ``total``).
        offset: One-time FLOPs spent before step 0, e.g. caching reference embeddings of the
            pool (``pool_size * F_ref``). Training the reference is a separate, reusable cost;
            add it here if you want it charged to this run.

    Returns:
        float64 array of the shape of ``steps``.

    Raises:
        TypeError: If ``steps`` is not integer or an argument has the wrong type.
        ValueError: If a step is negative or a number is negative or not finite.

    Example:
        >>> cumulative_flops([0, 10, 20], 5.0, offset=1.0).tolist()
        [1.0, 51.0, 101.0]
    """
    s = _steps_array(steps, increasing=False)
    return check_real("offset", offset, low=0.0) + s.astype(np.float64) * _per_step(flops_per_step)


def _steps_array(steps: Sequence[int] | np.ndarray, *, increasing: bool) -> np.ndarray:
    s = np.asarray(steps)
    if s.size == 0 and s.dtype == np.float64:  # np.asarray([]) is float
        s = s.astype(np.int64)
    if s.dtype == np.bool_ or not np.issubdtype(s.dtype, np.integer):
        raise TypeError(f"steps must be integers, got dtype {s.dtype}")
    if s.ndim != 1:
        raise ValueError(f"steps must be 1-D, got shape {s.shape}")
    if s.size and s.min() < 0:
        raise ValueError(f"steps must be >= 0, got {s.min()}")
    if increasing and np.any(np.diff(s) <= 0):
        raise ValueError("steps must be strictly increasing")
    return s


def _values_array(values: Sequence[float] | np.ndarray, n: int | None = None) -> np.ndarray:
    v = np.asarray(values)
    if v.dtype == np.bool_ or not np.issubdtype(v.dtype, np.number):
        raise TypeError(f"values must be real numbers, got dtype {v.dtype}")
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values must be a non-empty 1-D curve, got shape {v.shape}")
    if n is not None and v.size != n:
        raise ValueError(f"values and steps must have the same length, got {v.size} and {n}")
    v = v.astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"values must be finite, got {values!r}")
    return v


def smooth(values: Sequence[float] | np.ndarray, window: int = 3) -> np.ndarray:
    """Centred moving average of a curve, over ``window`` points, truncated at the ends.

    Point ``i`` becomes the mean of points ``i - h .. i + h`` (``h = window // 2``) that exist,
    so the first and last points average fewer neighbours and the length is unchanged. It looks
    ``h`` evaluations ahead: a curve "reaches" a target at an evaluation when the average around
    it does. ``window=1`` returns the curve unchanged.

    Args:
        values: A non-empty 1-D curve of finite numbers, e.g. accuracy per evaluation.
        window: An odd number of points >= 1.

    Returns:
        float64 array of the same length.

    Raises:
        TypeError: If ``values`` is not numeric or ``window`` not an int.
        ValueError: If ``values`` is not a finite non-empty 1-D curve or ``window`` is even
            or < 1.

    Example:
        >>> smooth([0.0, 3.0, 6.0, 3.0]).tolist()
        [1.5, 3.0, 4.0, 4.5]
    """
    v = _values_array(values)
    w = check_int("window", window, low=1)
    if w % 2 == 0:
        raise ValueError(f"window must be odd, got {w}")
    n, h = v.size, w // 2
    total, count = np.zeros(n), np.zeros(n)
    for offset in range(-min(h, n - 1), min(h, n - 1) + 1):  # O(n * window), no cancellation
        lo, hi = max(0, -offset), min(n, n - offset)
        total[lo:hi] += v[lo + offset : hi + offset]
        count[lo:hi] += 1
    return total / count


def final_value(values: Sequence[float] | np.ndarray, *, window: int = 3) -> float:
    """The last point of the :func:`smooth` ed curve: a run's final accuracy, de-noised.

    Use it for the target (uniform's final accuracy) so that the target and the crossings of
    :func:`steps_to_target` are smoothed alike; a curve always reaches its own final value.
    For several seeds, pass the mean curve: ``final_value(curves.mean(axis=0))``.

    Args:
        values: A non-empty 1-D curve.
        window: As in :func:`smooth`.

    Returns:
        The final smoothed value.

    Raises:
        TypeError: As :func:`smooth`.
        ValueError: As :func:`smooth`.

    Example:
        >>> round(final_value([0.1, 0.5, 0.8, 0.9]), 6)
        0.85
    """
    return float(smooth(values, window)[-1])


def steps_to_target(
    steps: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    target: float,
    *,
    window: int = 3,
) -> int | None:
    """The first evaluated step at which the :func:`smooth` ed curve reaches ``target``.

    The answer is one of ``steps`` (no interpolation), so it is as fine as the evaluation
    interval.

    Args:
        steps: Strictly increasing learner steps of the evaluations (non-negative integers).
        values: The metric at those steps (higher is better), same length.
        target: The value to reach (``>=``), e.g. ``final_value`` of uniform's curve.
        window: As in :func:`smooth`.

    Returns:
        The step, or ``None`` if the smoothed curve never reaches ``target``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If the curves are empty, of different lengths, not finite, or steps not
            strictly increasing.

    Example:
        >>> steps_to_target([100, 200, 300, 400], [0.2, 0.6, 0.9, 0.9], 0.75)
        300
        >>> steps_to_target([100, 200, 300, 400], [0.2, 0.6, 0.9, 0.9], 0.75, window=1) is None
        False
        >>> steps_to_target([100, 200], [0.2, 0.6], 0.75) is None
        True
    """
    s = _steps_array(steps, increasing=True)
    v = smooth(_values_array(values, s.size), window)
    if isinstance(target, bool) or not isinstance(target, numbers.Real):
        raise TypeError(f"target must be a real number, got {type(target).__name__} {target!r}")
    if not math.isfinite(float(target)):
        raise ValueError(f"target must be finite, got {target}")
    hit = np.flatnonzero(v >= float(target))
    return int(s[hit[0]]) if hit.size else None


def flops_to_target(
    steps: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    target: float,
    flops_per_step: float | StepFlops,
    *,
    window: int = 3,
    offset: float = 0.0,
) -> float | None:
    """Total FLOPs (scoring included) spent when the curve first reaches ``target``.

    ``offset + steps_to_target(...) * flops_per_step``; see :func:`steps_to_target` and
    :func:`cumulative_flops`.

    Args:
        steps: Strictly increasing learner steps of the evaluations.
        values: The metric at those steps.
        target: The value to reach.
        flops_per_step: FLOPs of one step, a number or a :class:`StepFlops` (its ``total``).
        window: As in :func:`smooth`.
        offset: One-time FLOPs before step 0 (e.g. caching reference embeddings).

    Returns:
        The FLOPs, or ``None`` if the target is never reached.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range (see :func:`steps_to_target`).

    Example:
        >>> flops_to_target([100, 200, 300], [0.5, 0.9, 0.9], 0.8, 10.0, window=1)
        2000.0
    """
    per_step = _per_step(flops_per_step)
    base = check_real("offset", offset, low=0.0)
    step = steps_to_target(steps, values, target, window=window)
    return None if step is None else base + step * per_step
