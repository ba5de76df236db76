"""The spec's selections for JAX arrays, compiled once per shape: thin aliases.

:func:`joint_select` and :func:`joint_select_embeddings` are :func:`jestcore.joint_select` and
:func:`jestcore.joint_select_embeddings`: the same checks (run eagerly, on the values too),
then the spec's own work under ``jax.jit`` (cached per shape and static argument), so that an
eager call compiles once and a call under an outer ``jax.jit`` is inlined. They also accept
NumPy arrays, which they convert to JAX arrays first (float64 becomes float32 unless 64-bit
types are enabled: values beyond float32's range are refused, saying so, and float64 noise is
rounded to float32).

The loops of selection are the JAX backend's ``chunk_loop`` and ``block_loop``
(:mod:`jestcore.backends`): ``lax.scan`` over the chunks (one scan per run of equal chunk
sizes) and over the row blocks of each chunk, so the compiled program, and its compile time,
do not grow with ``n_chunks`` or ``N / block_size``, and ``block_size`` bounds the temporaries
under ``jax.jit`` too.

Why a scan for the chunks: measured on 2 shared CPU cores (JAX 0.10.2, CPU time of the
process, so that other load on the machine counts less), learnability from two models,
``d = 256``, ``n_select = N // 5`` (819 and 3276, so two chunk sizes and two scan bodies):

| N | n_chunks | compile: unrolled, scan | run: unrolled, scan | indices |
|---|---|---|---|---|
| 4096 | 4 | 0.63-0.69 s, 0.43-0.50 s | 95-96 ms, 90-104 ms | identical |
| 4096 | 16 | 1.4-1.7 s, 0.67-0.70 s | 135 ms, 135-141 ms | identical |
| 4096 | 64 | 6.8-6.9 s, 0.72-0.76 s | 225-233 ms, 197-205 ms | identical |
| 16384 | 16 | 1.4-1.8 s, 0.71 s | 1.73 s, 1.75-1.79 s | identical |

The chunks depend on each other, so unrolling gives XLA nothing to overlap, and a chunk's
matrix products dwarf the loop overhead. The ``unroll`` argument of earlier releases (passed
to ``lax.scan``) is deprecated: it is ignored with a ``DeprecationWarning`` and goes in the next
release.
"""

from __future__ import annotations

import warnings
from typing import Any

import array_api_compat
import jax
import jax.numpy as jnp
import numpy as np
from jestcore.backends import get_backend

from jestcore import _validation as v
from jestcore import selection, streaming
from jestcore.streaming import PairEmbeddings, _models, check_model_shapes

__all__ = ["gumbel_rows", "joint_select", "joint_select_embeddings"]

_backend = get_backend(jnp)


def check_jax(**arrays: Any) -> None:
    """Refuses other frameworks' arrays: each must be a JAX array (or NumPy, which JAX converts).

    ``None`` and Python numbers are skipped (their own checks follow).
    """
    for name, x in arrays.items():
        if x is None or isinstance(x, int | float):
            continue
        if not (array_api_compat.is_jax_array(x) or array_api_compat.is_numpy_array(x)):
            raise TypeError(
                f"{name} must be a JAX array (or a NumPy array, which JAX converts), got "
                f"{type(x).__module__}.{type(x).__name__}"
            )


def as_jax(name: str, x: Any) -> Any:
    """``x`` as a JAX array if it is a NumPy array (else unchanged), refusing what would overflow.

    With 64-bit types disabled (JAX's default) JAX converts float64 to float32, where values
    beyond float32's range become infinite: those are refused here, naming the entry, rather
    than reported as "not finite" after the conversion.
    """
    if not array_api_compat.is_numpy_array(x):
        return x
    x = np.asarray(x)
    if x.dtype == np.float64 and not jax.config.read("jax_enable_x64"):
        why = "JAX converts float64 to float32 while 64-bit types are disabled (jax_enable_x64)"
        v.check_fits(name, x, np, np.float32, why)
    return jnp.asarray(x)


def _model_as_jax(name: str, model: Any) -> Any:
    """A model's NumPy embeddings as JAX arrays (anything that is not a 4-tuple: unchanged)."""
    if not isinstance(model, tuple) or len(model) != 4:
        return model
    return PairEmbeddings(
        *(as_jax(f"{name}.{f}", x) for f, x in zip(PairEmbeddings._fields, model, strict=True))
    )


def warn_unroll(unroll: Any) -> None:
    """The deprecation shim of the ``unroll`` argument (``None``: not given)."""
    if unroll is not None:
        warnings.warn(
            "unroll is deprecated and ignored: the chunk loop is the spec's, compiled as "
            "lax.scan by jestcore.backends.jax; the argument goes in the next release",
            DeprecationWarning,
            stacklevel=3,
        )


def gumbel_rows(seed: Any, n_rows: int, n: int, /, *, offset: Any = 0) -> Any:
    """Rows ``0..n_rows-1`` and columns ``offset..offset+n-1`` of the portable Gumbel stream.

    Those columns of ``jestcore.gumbel_noise(seed, (n_rows, N), xp=jax.numpy)``: the same
    random integers bit for bit, the same noise up to the last bit of ``log`` (as NumPy's),
    computed in one vectorised pass
    (:func:`jestcore.selection.gumbel_rows` with ``xp=jax.numpy``); ``offset`` may be traced,
    so each device of a mesh can draw the columns of its own shard.

    Args:
        seed: A Python int in ``[0, 2**32)`` or a 0-d integer array (may be traced).
        n_rows: Number of rows (static).
        n: Number of columns (static).
        offset: First column, a Python int or 0-d integer array.

    Returns:
        A float32 array of shape ``(n_rows, n)``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If the seed, a size or the offset is out of range.
    """
    v.check_seed(seed)
    n_rows = v.check_int("n_rows", n_rows, low=0)
    n = v.check_int("n", n, low=0, high=2**31 - 1, high_doc="2**31 - 1")
    if isinstance(offset, int):
        v.check_int("offset", offset, low=0, high=2**31 - 1, high_doc="2**31 - 1")
    elif not (
        array_api_compat.is_jax_array(offset)
        and offset.ndim == 0
        and jnp.issubdtype(offset.dtype, jnp.integer)
    ):
        raise TypeError(f"offset must be an int or a 0-d integer JAX array, got {offset!r}")
    return selection.gumbel_rows(seed, n_rows, n, xp=jnp, offset=offset)


def as_seed(seed: Any) -> Any:
    """A validated seed as something ``jax.jit`` can trace: Python ints become uint32 arrays."""
    return jnp.asarray(seed, dtype=jnp.uint32) if isinstance(seed, int) else seed


_select_from_scores = jax.jit(selection.select_from_scores, static_argnames=("sizes", "greedy"))
_select_embeddings = jax.jit(
    streaming.select_embeddings,
    static_argnames=("score", "sizes", "greedy", "block_size", "loss"),
)


def joint_select(
    scores: Any,
    /,
    n_select: int,
    *,
    n_chunks: int = 16,
    gain: float = 100.0,
    seed: Any = None,
    noise: Any = None,
    greedy: bool = False,
    unroll: Any = None,
) -> Any:
    """:func:`jestcore.joint_select` for JAX arrays, compiled once per shape.

    Same arguments, checks and result; under ``jax.jit`` mark ``n_select``, ``n_chunks``,
    ``gain`` and ``greedy`` static, and ``scores``, ``seed`` and ``noise`` may be traced
    (``gain`` is traced inside, so other gains reuse the compilation). Values (NaN, inf)
    are checked only outside ``jax.jit``; under it, non-finite candidates rank after every
    finite one.

    Args:
        scores: ``(N, N)`` real floating score matrix (JAX, or NumPy: converted).
        n_select: How many examples to select, between 1 and N.
        n_chunks: How many chunks to draw them in, between 1 and ``n_select``.
        gain: The score gain (default 100.0, the paper's recipe; 1.0 is Algorithm 1 as
            printed): each chunk takes the top-k of ``gain * logit + noise``.
        seed: Seed of the portable generator (an int in ``[0, 2**32)`` or a 0-d integer array).
        noise: Explicit Gumbel noise of shape ``(n_chunks, N)``.
        greedy: Take the plain top-k of each chunk's logits (no noise).
        unroll: Deprecated and ignored (a ``DeprecationWarning`` when given).

    Returns:
        ``n_select`` distinct int32 indices (int64 with 64-bit types enabled), chunk by chunk,
        each chunk in descending perturbed logit, ties to the lower index.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape or value is out of range, or there is not exactly one source of
            randomness.

    Example:
        >>> import jax.numpy as jnp
        >>> S = jnp.array([[3.0, -1.0, 0.0], [-1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
        >>> joint_select(S, 2, n_chunks=2, greedy=True).tolist()
        [0, 2]
    """
    warn_unroll(unroll)
    check_jax(scores=scores, noise=noise)
    scores, noise = as_jax("scores", scores), as_jax("noise", noise)
    sizes, gain = selection.check_joint_select(
        scores, n_select, n_chunks, seed, noise, greedy, gain
    )
    return _select_from_scores(scores, as_seed(seed), noise, sizes=sizes, greedy=greedy, gain=gain)


def check_embeddings(
    learner: Any, reference: Any, score: str
) -> tuple[list[tuple[str, PairEmbeddings, int]], dict[str, Any], int]:
    """Validates the models that ``score`` needs, as :func:`jestcore.joint_select_embeddings`.

    Returns:
        ``(models, arrays, N)``: ``(name, embeddings, sign)`` of each model, its embedding
        arrays by name (``"learner.image"``...), and the number of examples.
    """
    models = _models(learner, reference, score)
    arrays = {f"{name}.{f}": getattr(m, f) for name, m, _ in models for f in ("image", "text")}
    check_jax(**arrays)
    n = check_model_shapes(models, jnp)
    return models, arrays, n


def joint_select_embeddings(
    learner: PairEmbeddings | None,
    reference: PairEmbeddings | None,
    /,
    n_select: int,
    *,
    n_chunks: int = 16,
    score: str = "learnability",
    loss: str = "sigmoid",
    gain: float = 100.0,
    seed: Any = None,
    noise: Any = None,
    greedy: bool = False,
    block_size: int | None = None,
    unroll: Any = None,
) -> Any:
    """:func:`jestcore.joint_select_embeddings` for JAX arrays, compiled once per shape.

    Same arguments, checks and result. Under ``jax.jit`` mark ``n_select``, ``n_chunks``,
    ``score``, ``loss``, ``gain``, ``greedy`` and ``block_size`` static (``gain`` is traced
    inside, so other gains reuse the compilation); the embeddings, ``scale``, ``bias``,
    ``seed`` and ``noise`` may be traced, so one compilation serves every step of a training
    run. Values (NaN, inf) are checked only outside ``jax.jit``; under it, non-finite
    candidates rank after every finite one.

    Args:
        learner: The learner's :class:`~jestcore.PairEmbeddings` (``None`` for
            ``score="easy_reference"``).
        reference: The reference model's :class:`~jestcore.PairEmbeddings` (``None`` for
            ``score="hard_learner"``).
        n_select: How many examples to select, between 1 and N.
        n_chunks: How many chunks to draw them in, between 1 and ``n_select``.
        score: ``"learnability"``, ``"hard_learner"`` or ``"easy_reference"``.
        loss: ``"sigmoid"`` (SigLIP) or ``"softmax"`` (CLIP / InfoNCE, the paper's
            Algorithm 3); see :func:`jestcore.joint_select_embeddings`.
        gain: The score gain (default 100.0, the paper's recipe; 1.0 is Algorithm 1 as
            printed): each chunk takes the top-k of ``gain * logit + noise``.
        seed: Seed of the portable generator (an int in ``[0, 2**32)`` or a 0-d integer array).
        noise: Explicit Gumbel noise of shape ``(n_chunks, N)``.
        greedy: Take the plain top-k of each chunk's logits (no noise).
        block_size: At most this many rows of a chunk are multiplied at once (a ``lax.scan``
            over the blocks, so this bounds the temporaries); by default about 2**23 elements
            (the JAX backend's ``default_block_size``), as the spec.
        unroll: Deprecated and ignored (a ``DeprecationWarning`` when given).

    Returns:
        ``n_select`` distinct int32 indices (int64 with 64-bit types enabled), chunk by chunk,
        each chunk in descending perturbed logit, ties to the lower index.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape or value is out of range, a needed model is missing, or there is
            not exactly one source of randomness.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jestcore import PairEmbeddings
        >>> k1, k2 = jax.random.split(jax.random.key(0))
        >>> emb = PairEmbeddings(jax.random.normal(k1, (8, 4)), jax.random.normal(k2, (8, 4)),
        ...                      1.0, 0.0)
        >>> select = jax.jit(joint_select_embeddings,
        ...                  static_argnames=("n_select", "n_chunks", "score"))
        >>> select(emb, None, n_select=4, n_chunks=2, score="hard_learner", seed=0).shape
        (4,)
    """
    warn_unroll(unroll)
    learner, reference = _model_as_jax("learner", learner), _model_as_jax("reference", reference)
    check_jax(noise=noise)
    noise = as_jax("noise", noise)
    for name, model in (("learner", learner), ("reference", reference)):
        if isinstance(model, tuple) and len(model) == 4:
            check_jax(**{f"{name}.image": model[0], f"{name}.text": model[1]})
    sizes, block_size, gain = streaming.check_select_embeddings(
        learner, reference, n_select, n_chunks, score, seed, noise, greedy, block_size, gain,
        loss=loss,
    )  # fmt: skip
    return _select_embeddings(
        learner,
        reference,
        as_seed(seed),
        noise,
        score=score,
        sizes=sizes,
        greedy=greedy,
        block_size=block_size,
        gain=gain,
        loss=loss,
    )
