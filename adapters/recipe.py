"""What the reference trainers and the demo share, written once (framework-neutral).

The PyTorch trainer (:mod:`jestcore.adapters.torch.trainer`), the JAX trainer
(:mod:`jestcore.adapters.jax.trainer`) and the demo application (:mod:`jestcore.adapters.demo`)
follow one recipe; this module holds it, with NumPy and the spec only:

* the selection methods, :data:`METHODS` / :data:`METHOD_SPECS`: what each scores and how it maps
  to one selection call (a score and a number of chunks, :meth:`MethodSpec.n_chunks`, at the
  run's score gain, 100 by default as in the paper's Algorithm 2);
* the super-batch size of a sub-batch and filter ratio (:func:`super_batch_size`) and the seeded
  draw of a step's rows (:func:`draw_rows`);
* the learning-rate schedule, linear warm-up then cosine decay to zero (:func:`learning_rate`;
  each trainer wraps it in its framework's schedule object), and the evaluation steps
  (:func:`eval_steps`);
* average pooling of square images for Flexi scoring (:func:`downsample`) and Flexi-JEST's
  co-training split (:func:`flexi_split`: ``[::2]`` at full resolution, ``[1::2]`` at the low
  scoring resolution, Algorithm 2 of the paper);
* Adam's ``beta2`` (:func:`adam_beta2`: 0.95 when a method filters, 0.999 otherwise, Appendix
  A.2; selected data is never re-weighted, A.3);
* :func:`check_real`, the check of a real-valued option.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from jestcore import _validation as v
from jestcore.streaming import SCORES

__all__ = [
    "ADAM_BETA1",
    "FILTERING_BETA2",
    "METHODS",
    "METHOD_SPECS",
    "MethodSpec",
    "UNIFORM_BETA2",
    "adam_beta2",
    "check_real",
    "downsample",
    "draw_rows",
    "flexi_split",
    "eval_steps",
    "learning_rate",
    "method_spec",
    "super_batch_size",
    "warmup_steps",
]


def check_real(
    name: str, value: Any, *, low: float = -math.inf, high: float | None = None
) -> float:
    """``value`` as a finite float in ``[low, high)`` (``[low, inf)`` without ``high``).

    Args:
        name: The argument's name, for the message.
        value: A real number (NumPy scalars too), never a bool.
        low: The smallest allowed value.
        high: The excluded upper bound, or ``None``.

    Returns:
        The value as a float.

    Raises:
        TypeError: If ``value`` is not a real number.
        ValueError: If it is not finite or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    x = float(value)
    if not math.isfinite(x) or x < low or (high is not None and x >= high):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return x


@dataclass(frozen=True)
class MethodSpec:
    """What a selection method scores and how it selects.

    Every method that selects is one call of the joint selection of the spec or of an adapter
    (:func:`jestcore.joint_select_embeddings`, :func:`jestcore.adapters.torch.select_batch`,
    :class:`jestcore.adapters.jax.JESTSelector`) with ``score=spec.score``,
    ``n_chunks=spec.n_chunks(n_chunks)`` and the run's ``gain`` (100 by default, the paper's
    ``softmax_score_gain`` of Algorithm 2; the same gain for joint and independent selection).

    Attributes:
        name: The method's name in :data:`METHODS`.
        score: ``"learnability"``, ``"hard_learner"``, ``"easy_reference"``, or ``None`` for
            uniform sampling.
        selection: ``"joint_streaming"`` (chunked joint selection), ``"independent_diagonal"``
            (each pair ranked by its own score, the diagonal of the score matrix), or ``None``
            for uniform sampling.
        factor: The learner scores images pooled by this factor (1: full resolution; 2: Flexi
            scoring at half the side). A method with ``factor > 1`` is Flexi-JEST (Algorithm 2
            of the paper): it also **co-trains** the low resolution, training the selected
            rows ``[::2]`` at full resolution and ``[1::2]`` pooled by ``factor``
            (:func:`flexi_split`).
        description: One line for reports.
    """

    name: str
    score: str | None
    selection: str | None
    factor: int
    description: str

    @property
    def uses_learner(self) -> bool:
        """Whether the score needs the learner's embeddings of the super-batch."""
        return self.score is not None and SCORES[self.score][0] != 0

    @property
    def uses_reference(self) -> bool:
        """Whether the score needs the (cached) reference embeddings."""
        return self.score is not None and SCORES[self.score][1] != 0

    @property
    def co_training(self) -> float:
        """The nominal fraction of the sub-batch trained at the low resolution: 0.5 for Flexi.

        The paper needs at least 25% (Appendix A.7); the split is :func:`flexi_split` (with an
        odd ``b`` the low half has ``b // 2`` rows).
        """
        return 0.5 if self.factor > 1 else 0.0

    def n_chunks(self, n_chunks: int) -> int:
        """The chunks of this method's selection call, given the run's ``n_chunks``.

        Independent selection is joint selection in **one** chunk: Algorithm 1 draws its first
        chunk from the diagonal of the score matrix, each pair's own score, with the same noise
        as :func:`jestcore.independent_select`. So every method is one call, and independent
        selection honours the method's score.
        """
        return 1 if self.selection == "independent_diagonal" else n_chunks


#: The methods, in report order.
METHODS: tuple[str, ...] = (
    "uniform",
    "hard_learner",
    "easy_reference",
    "independent",
    "jest",
    "flexi_jest",
)

#: The :class:`MethodSpec` of every method in :data:`METHODS`. ``"independent"`` is the paper's
#: *independent learnability* baseline: its score is learnability by definition.
METHOD_SPECS: dict[str, MethodSpec] = {
    "uniform": MethodSpec("uniform", None, None, 1, "uniform sampling of b pool pairs"),
    "hard_learner": MethodSpec(
        "hard_learner", "hard_learner", "joint_streaming", 1, "joint selection, learner loss"
    ),
    "easy_reference": MethodSpec(
        "easy_reference",
        "easy_reference",
        "joint_streaming",
        1,
        "joint selection, minus reference loss",
    ),
    "independent": MethodSpec(
        "independent",
        "learnability",
        "independent_diagonal",
        1,
        "independent selection, each pair's learnability",
    ),
    "jest": MethodSpec(
        "jest", "learnability", "joint_streaming", 1, "joint selection, learnability"
    ),
    "flexi_jest": MethodSpec(
        "flexi_jest",
        "learnability",
        "joint_streaming",
        2,
        "joint learnability scored on 4x4 images; trains half at 8x8, half at 4x4",
    ),
}


def method_spec(method: Any) -> MethodSpec:
    """The :class:`MethodSpec` of ``method``.

    Raises:
        ValueError: If ``method`` is not one of :data:`METHODS`.
    """
    if not isinstance(method, str) or method not in METHOD_SPECS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return METHOD_SPECS[method]


#: Adam's ``beta1`` in both trainers.
ADAM_BETA1 = 0.9
#: Adam's ``beta2`` when a method filters: the paper needed 0.95 at ``f >= 0.8`` (loss spikes
#: with 0.999, Appendix A.2).
FILTERING_BETA2 = 0.95
#: Adam's ``beta2`` otherwise (uniform sampling, or ``f = 0``).
UNIFORM_BETA2 = 0.999


def adam_beta2(method: str, filter_ratio: float) -> float:
    """The default Adam ``beta2`` of a run: 0.95 when it filters, 0.999 otherwise.

    A run filters when its method selects (every method but ``"uniform"``) and ``f > 0``.
    The paper (Appendix A.2) needed ``beta2 = 0.95`` at ``f >= 0.8``; selected examples keep
    weight 1 in the loss (re-weighting them was harmful, Appendix A.3).

    Args:
        method: One of :data:`METHODS`.
        filter_ratio: ``f`` in ``[0, 1)``.

    Returns:
        :data:`FILTERING_BETA2` or :data:`UNIFORM_BETA2`.

    Raises:
        TypeError: If ``filter_ratio`` is not a real number.
        ValueError: If ``method`` is unknown or ``filter_ratio`` out of range.

    Example:
        >>> adam_beta2("jest", 0.8), adam_beta2("uniform", 0.8), adam_beta2("jest", 0.0)
        (0.95, 0.999, 0.999)
    """
    spec = method_spec(method)
    f = v.check_ratio("filter_ratio", filter_ratio)
    return FILTERING_BETA2 if spec.score is not None and f > 0 else UNIFORM_BETA2


def flexi_split(n: int) -> tuple[slice, slice]:
    """Flexi-JEST's co-training split of ``n`` selected rows (Algorithm 2 of the paper).

    Rows ``[::2]`` train at full resolution, rows ``[1::2]`` at the low (scoring) resolution,
    each half with its own SigLIP loss; the step's loss is the mean of the two. So the learner's
    low-resolution path, which scores the super-batch, is co-trained on half of the batch (the
    paper needs at least 25%, Appendix A.7).

    Args:
        n: The sub-batch size ``b`` (>= 2, so that both halves have a row).

    Returns:
        ``(full, low)`` slices.

    Raises:
        ValueError: If ``n < 2``.

    Example:
        >>> full, low = flexi_split(5)
        >>> list(range(5))[full], list(range(5))[low]
        ([0, 2, 4], [1, 3])
    """
    v.check_int("n", n, low=2)
    return slice(0, None, 2), slice(1, None, 2)


def super_batch_size(batch_size: int, filter_ratio: float) -> int:
    """The super-batch size ``N = b / (1 - f)``, rounded to the nearest int (at least ``b``).

    The inverse of :func:`jestcore.sub_batch_size`: ``sub_batch_size(N, filter_ratio=f) == b``.

    Args:
        batch_size: The sub-batch size ``b`` that is trained on (>= 1).
        filter_ratio: The fraction ``f`` of the super-batch that is discarded, in ``[0, 1)``.

    Returns:
        ``N``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range.

    Example:
        >>> super_batch_size(64, 0.8)
        320
    """
    b = v.check_int("batch_size", batch_size, low=1)
    f = v.check_ratio("filter_ratio", filter_ratio)
    return max(b, round(b / (1.0 - f)))


def draw_rows(n: int, size: int, *, seed: int, step: int, stream: int = 1) -> np.ndarray:
    """``size`` distinct rows of ``n``, uniformly at random in random order, for one step.

    The generator is ``numpy.random.default_rng([seed, stream, step])``: the same rows for every
    method and backend at one ``(seed, step)``. Stream 1 draws super-batches; the demo draws its
    reference's batches from stream 2.

    Args:
        n: Rows to draw from (at least ``size``).
        size: Rows to draw.
        seed: The run's seed (>= 0).
        step: The step (>= 0).
        stream: Which independent stream.

    Returns:
        int64 ``(size,)`` indices.

    Raises:
        ValueError: If ``size > n``.
    """
    size = v.check_int("size", size, low=1, high=n, high_doc=f"the {n} rows")
    rng = np.random.default_rng([seed, stream, step])
    return rng.choice(n, size=size, replace=False).astype(np.int64)


def warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    """Warm-up steps of a run: ``max(1, round(warmup_fraction * total_steps))``."""
    return max(1, round(warmup_fraction * total_steps))


def learning_rate(step: int, total_steps: int, *, peak: float, warmup_fraction: float) -> float:
    """The learning rate of step ``step`` of ``total_steps``: linear warm-up, then cosine to 0.

    With ``w =`` :func:`warmup_steps`, step ``t`` gets ``peak * (t + 1) / w`` while ``t < w``,
    then ``peak * (1 + cos(pi * (t - w) / (total_steps - w))) / 2``. The one schedule of both
    trainers: the PyTorch trainer wraps it in a ``torch.optim.lr_scheduler.LambdaLR``, the JAX
    trainer builds the same rates as an optax schedule
    (:func:`jestcore.adapters.jax.trainer.learning_rate_schedule`).

    Args:
        step: The step, ``0 <= step <= total_steps``.
        total_steps: Steps of the run.
        peak: The peak rate.
        warmup_fraction: Fraction of the steps of linear warm-up (at least one step).

    Returns:
        The rate.

    Example:
        >>> [round(learning_rate(t, 10, peak=1.0, warmup_fraction=0.1), 3) for t in (0, 1, 5, 9)]
        [1.0, 1.0, 0.587, 0.03]
    """
    warm = warmup_steps(total_steps, warmup_fraction)
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, total_steps - warm)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def eval_steps(steps: int, every: int) -> list[int]:
    """The step counts after which to evaluate: 0, every ``every`` steps, and the last.

    Example:
        >>> eval_steps(120, 50)
        [0, 50, 100, 120]
    """
    return [*range(0, steps, every), steps]


def downsample(images: np.ndarray, factor: int = 2) -> np.ndarray:
    """Average-pools square images by ``factor`` (8x8 to 4x4 by default), for Flexi scoring.

    Args:
        images: ``(n, s*s)`` flattened row-major images, or ``(n, s, s)``; ``s`` divisible by
            ``factor``.
        factor: Side of the pooled blocks (>= 1).

    Returns:
        float32 images in the layout of the input: ``(n, (s/factor)**2)`` or
        ``(n, s/factor, s/factor)``.

    Raises:
        TypeError: If ``images`` is not a real array or ``factor`` not an int.
        ValueError: If the shape is not one of the above or ``s`` is not divisible by ``factor``.

    Example:
        >>> downsample(np.arange(64, dtype=np.float32).reshape(1, 64))[0, :2].tolist()
        [4.5, 6.5]
    """
    v.check_int("factor", factor, low=1)
    images = np.asarray(images)
    if not (np.issubdtype(images.dtype, np.floating) or np.issubdtype(images.dtype, np.integer)):
        raise TypeError(f"images must be a real array, got dtype {images.dtype}")
    if images.ndim == 2:
        side = math.isqrt(images.shape[1])
        if side * side != images.shape[1]:
            raise ValueError(
                f"images of shape (n, s*s) need a square number of pixels, got {images.shape}"
            )
    elif images.ndim == 3 and images.shape[1] == images.shape[2]:
        side = images.shape[1]
    else:
        raise ValueError(f"images must have shape (n, s*s) or (n, s, s), got {images.shape}")
    if side % factor:
        raise ValueError(f"the image side {side} must be divisible by factor = {factor}")
    n, t = images.shape[0], side // factor
    blocks = images.reshape(n, t, factor, t, factor).astype(np.float32)
    pooled = blocks.mean(axis=(2, 4), dtype=np.float32)
    return pooled.reshape(n, t * t) if images.ndim == 2 else pooled
