"""What the reference trainers and the demo share, written once (framework-neutral).

The PyTorch trainer (:mod:`jestcore.adapters.torch.trainer`), the JAX trainer
(:mod:`jestcore.adapters.jax.trainer`) and the demo application (:mod:`jestcore.adapters.demo`)
follow one recipe; this module holds it, with NumPy and the spec only:

* the selection methods, :data:`METHODS` / :data:`METHOD_SPECS`: what each scores and how it maps
  to one selection call (a score and a number of chunks, :meth:`MethodSpec.n_chunks`);
* the super-batch size of a sub-batch and filter ratio (:func:`super_batch_size`) and the seeded
  draw of a step's rows (:func:`draw_rows`);
* the learning-rate schedule, linear warm-up then cosine decay to zero (:func:`learning_rate`;
  each trainer wraps it in its framework's schedule object), and the evaluation steps
  (:func:`eval_steps`);
* average pooling of square images for Flexi scoring (:func:`downsample`);
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
    "METHODS",
    "METHOD_SPECS",
    "MethodSpec",
    "check_real",
    "downsample",
    "draw_rows",
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
    :class:`jestcore.adapters.jax.JESTSelector`) with ``score=spec.score`` and
    ``n_chunks=spec.n_chunks(n_chunks)``.

    Attributes:
        name: The method's name in :data:`METHODS`.
        score: ``"learnability"``, ``"hard_learner"``, ``"easy_reference"``, or ``None`` for
            uniform sampling.
        selection: ``"joint_streaming"`` (chunked joint selection), ``"independent_diagonal"``
            (each pair ranked by its own score, the diagonal of the score matrix), or ``None``
            for uniform sampling.
        factor: The learner scores images pooled by this factor (1: full resolution; 2: Flexi
            scoring at half the side).
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
        "joint learnability, learner scores 4x4 images",
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
