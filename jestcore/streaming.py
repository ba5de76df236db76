"""Exact joint selection from embeddings without forming the N x N score matrix.

The conditional logits of joint selection only need the rows and columns of the score matrix
that belong to selected items. For the pairwise sigmoid loss they follow from embeddings: after
chunk C, every candidate's logit grows by ``sum_{j in C} S_jm + S_mj``, which needs
``image_C @ text.T`` and ``text_C @ image.T`` for each model. So selection costs O(N * b * d)
arithmetic and O(N * (d + block)) memory instead of O(N^2 * d) and O(N^2).

For the softmax (CLIP) loss (the paper's Algorithm 3) the same four products per chunk update a
running log-sum-exp per candidate, model and direction, from which the logits follow.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

from jestcore import _validation as v
from jestcore._namespace import device_of, namespace_of, same_device
from jestcore.backends import get_backend
from jestcore.scores import check_scale_bias
from jestcore.selection import blocked_select, chunk_sizes, noise_rows, peak_magnitude

__all__ = ["LOSSES", "SCORES", "PairEmbeddings", "joint_select_embeddings"]

#: The scores that :func:`joint_select_embeddings` accepts, with the sign of each model's loss.
SCORES: dict[str, tuple[int, int]] = {
    "learnability": (1, -1),
    "hard_learner": (1, 0),
    "easy_reference": (0, -1),
}

#: The contrastive losses that :func:`joint_select_embeddings` accepts.
LOSSES = ("sigmoid", "softmax")

#: Default bound on the elements of one temporary block of pairwise logits (64 MiB in float32).
BLOCK_ELEMENTS = 2**24


class PairEmbeddings(NamedTuple):
    """A contrastive model's embeddings of N image-text pairs, with its loss parameters.

    A ``NamedTuple``, so JAX treats it as a pytree (it passes through ``jax.jit`` and
    ``jax.tree_util`` unchanged).

    Attributes:
        image: ``(N, d)`` image embeddings (float16, bfloat16, float32 or float64).
        text: ``(N, d)`` text embeddings of the same pairs; ``d`` may differ between models.
        scale: The temperature, already exponentiated: a float or a 0-d floating array.
        bias: The logit bias of the sigmoid loss: a float or a 0-d floating array. The softmax
            loss has none: a bias adds the same constant to every logit of a softmax, so it
            cancels; ``loss="softmax"`` checks it (finite) and leaves it out.
    """

    image: Any
    text: Any
    scale: Any
    bias: Any


def _check_model(name: str, model: Any) -> PairEmbeddings:
    if not isinstance(model, tuple) or len(model) != 4:
        raise TypeError(
            f"{name} must be a PairEmbeddings(image, text, scale, bias), got {type(model).__name__}"
        )
    return PairEmbeddings(*model)


def _models(learner: Any, reference: Any, score: Any) -> list[tuple[str, PairEmbeddings, int]]:
    """The (name, embeddings, sign) of each model that ``score`` needs, validated."""
    check_score(score)
    models = []
    for name, model, sign in zip(
        ("learner", "reference"), (learner, reference), SCORES[score], strict=True
    ):
        if sign == 0:
            continue
        if model is None:
            raise ValueError(f'score="{score}" needs {name} embeddings, got None')
        models.append((name, _check_model(name, model), sign))
    return models


def check_loss(loss: Any) -> str:
    """``loss`` if it is one of :data:`LOSSES`; else a ``TypeError`` or ``ValueError``."""
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a str, one of {list(LOSSES)}, got {loss!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    return loss


def check_score(score: Any) -> str:
    """``score`` if it is one of :data:`SCORES`; else a ``TypeError`` or ``ValueError``."""
    if not isinstance(score, str):
        raise TypeError(f"score must be a str, one of {sorted(SCORES)}, got {score!r}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {sorted(SCORES)}, got {score!r}")
    return score


def _unused_models(
    learner: Any, reference: Any, score: str
) -> list[tuple[str, PairEmbeddings, int]]:
    """The models given although ``score`` does not use them, type-checked (sign 0)."""
    given = zip(("learner", "reference"), (learner, reference), SCORES[score], strict=True)
    return [
        (name, _check_model(name, m), 0) for name, m, sign in given if sign == 0 and m is not None
    ]


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
) -> Any:
    """Joint selection from embeddings, exactly as :func:`joint_select` on the materialised scores.

    With ``loss="sigmoid"`` it returns the indices that ``joint_select(S, n_select, ...)``
    returns for the score matrix ``S`` built from the same embeddings with
    :func:`sigmoid_loss_matrix` (up to floating-point near-ties), but never allocates anything
    of size N x N: the diagonal comes from row-wise products, and after each chunk every
    candidate's logit is updated from four ``(c x d) @ (d x N)`` products and a softplus.

    With ``loss="softmax"`` it selects under the softmax-contrastive (CLIP) loss, the paper's
    Algorithm 3: with ``L_ij = scale * <image_i, text_j>`` (no bias: it cancels), chunk 0 draws
    from ``u_i = -L_ii`` and chunk ``k > 0`` from ``u_i + neg_i(B)``, where ``B`` is the
    selected set and ``neg_i(B) = (logsumexp_{j in B} L_ji + logsumexp_{j in B} L_ij) / 2``,
    each model's terms signed as ``score`` says (learner minus reference for learnability).
    The same four products per chunk update a running, max-shifted log-sum-exp per candidate,
    model and direction, so time and memory are the sigmoid path's and no temperature
    overflows.

    Logits accumulate in float32 (float64 when an input is float64), so float16 and bfloat16
    embeddings are accepted.

    Args:
        learner: The learner's :class:`PairEmbeddings` (may be ``None`` for
            ``score="easy_reference"``).
        reference: The reference model's :class:`PairEmbeddings` (may be ``None`` for
            ``score="hard_learner"``); the same N as the learner, any embedding width. A
            model that ``score`` does not use may be ``None`` or given: if given, it is
            checked like a used one (types, shapes, the same N; not its values) and ignored.
        n_select: How many examples to select, between 1 and N.
        n_chunks: How many chunks to draw them in, between 1 and ``n_select``.
        score: ``"learnability"`` (learner loss - reference loss), ``"hard_learner"`` (learner
            loss) or ``"easy_reference"`` (- reference loss).
        loss: The contrastive loss the scores are of: ``"sigmoid"`` (SigLIP, pairwise) or
            ``"softmax"`` (CLIP / InfoNCE); static under ``jax.jit``.
        gain: The score gain, a finite real number > 0: each chunk draws the top-k of
            ``gain * logit + noise`` (100.0, the paper's recipe; 1.0 is Algorithm 1 as
            printed); see :func:`joint_select`.
        seed: Seed of the portable generator (an int in ``[0, 2**32)`` or a 0-d integer array).
        noise: Explicit Gumbel noise of shape ``(n_chunks, N)``, used as given: float64 noise
            makes the logits float64 (it is not rounded to float32).
        greedy: Take the plain top-k of each chunk's logits (no noise; ``gain`` is checked
            and ignored).
        block_size: At most this many rows of a chunk are multiplied at once, bounding the
            temporaries to ``block_size x N``; by default the backend's
            ``default_block_size(N)`` (about 2**25 elements, 2**23 on JAX). Each chunk is
            split into nearly equal blocks. Under ``jax.jit`` the blocks (and the chunks) are
            a ``lax.scan``, so the bound holds there too and the compile time does not grow
            with ``N / block_size`` or ``n_chunks``.

    Returns:
        A 1-D integer array of ``n_select`` distinct indices, chunk by chunk, each chunk in
        descending perturbed logit; same namespace and device as the embeddings.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape or value is out of range, a needed model is missing, or there is
            not exactly one source of randomness.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> emb = PairEmbeddings(rng.normal(size=(8, 4)), rng.normal(size=(8, 4)), 1.0, 0.0)
        >>> joint_select_embeddings(emb, None, 4, n_chunks=2, score="hard_learner", seed=0).shape
        (4,)
    """
    sizes, block_size, gain = check_select_embeddings(
        learner,
        reference,
        n_select,
        n_chunks,
        score,
        seed,
        noise,
        greedy,
        block_size,
        gain,
        loss=loss,
    )
    return select_embeddings(
        learner,
        reference,
        seed,
        noise,
        score=score,
        sizes=sizes,
        greedy=greedy,
        block_size=block_size,
        gain=gain,
        loss=loss,
    )


def check_select_embeddings(
    learner: Any,
    reference: Any,
    n_select: Any,
    n_chunks: Any,
    score: Any,
    seed: Any,
    noise: Any,
    greedy: Any,
    block_size: Any,
    gain: Any,
    *,
    loss: Any = "sigmoid",
) -> tuple[tuple[int, ...], int, float]:
    """Every check of :func:`joint_select_embeddings`'s arguments (values too, unless traced).

    Returns:
        ``(chunk sizes, block size, gain as a Python float)``.
    """
    check_loss(loss)
    xp, n, _, models = _check_embeddings(learner, reference, score, values=False, noise=noise)
    n_select = v.check_int("n_select", n_select, low=1, high=n, high_doc=f"N = {n}")
    sizes = chunk_sizes(n_select, n_chunks)
    v.check_randomness(seed, noise, greedy, (len(sizes), n), xp)
    gain = v.check_gain(gain)
    same_device({f"{models[0][0]}.image": models[0][1].image, "seed": seed})
    backend = get_backend(xp)
    if block_size is None:
        block_size = backend.default_block_size(n)
    block_size = v.check_int("block_size", block_size, low=1)
    if noise is not None:
        v.check_finite("noise", noise, xp, backend)
    terms = 2 * sum(sizes) - 1
    check_embedding_values(
        models, xp, backend, gain=None if greedy else gain, terms=terms, noise=noise
    )
    return sizes, block_size, gain


def _lazy(models: list[tuple[str, PairEmbeddings, int]], backend: Any) -> bool:
    """Whether some array of ``models`` cannot be read (traced, e.g. under ``jax.jit``)."""
    arrays = [getattr(m, f) for _, m, _ in models for f in ("image", "text", "scale", "bias")]
    return any(not isinstance(a, int | float) and backend.is_lazy(a) for a in arrays)


def check_embedding_values(
    models: list[tuple[str, PairEmbeddings, int]],
    xp: Any,
    backend: Any,
    *,
    gain: float | None,
    terms: int,
    noise: Any = None,
) -> None:
    """Checks that ``models`` are finite and, given a ``gain``, that ``gain * logit`` fits.

    One host read when all is well. The bound on a pair's loss of
    :func:`check_gain_fits_embeddings`, ``|scale| * d * max|image| * max|text| + |bias| + 1``
    summed over the models, is formed on the device from one ``max`` and one ``min`` pass per
    array (both propagate NaN) and read once: it is finite only if every entry, scale and bias
    is. Otherwise (or if it overflows the arrays' dtype) each value is checked on its own,
    which names the first non-finite one, and the bound is recomputed in Python floats.
    Skipped where values cannot be read (traced).
    """
    if _lazy(models, backend):
        return
    pair: Any = 0.0
    with warnings.catch_warnings():  # NumPy warns where the bound overflows; handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        for _, m, _ in models:
            width = m.image.shape[1]
            peaks = peak_magnitude(m.image, xp) * peak_magnitude(m.text, xp)
            pair = pair + abs(m.scale) * width * peaks
            pair = pair + abs(m.bias) + 1.0
    bound = float(pair)
    if not math.isfinite(bound):
        for name, m, _ in models:
            check_scale_bias(m.scale, m.bias, xp, prefix=f"{name}.")
            v.check_finite(f"{name}.image", m.image, xp, backend)
            v.check_finite(f"{name}.text", m.text, xp, backend)
        if gain is not None:
            check_gain_fits_embeddings(gain, models, terms, xp, backend, noise)
    elif gain is not None:
        _check_gain_fits_pairs(gain, bound, models, terms, xp, noise)


def check_gain_fits_embeddings(
    gain: float,
    models: list[tuple[str, PairEmbeddings, int]],
    terms: int,
    xp: Any,
    backend: Any,
    noise: Any,
) -> None:
    """Refuses a gain under which ``gain * logit`` could overflow (skipped for traced inputs).

    A pair's loss is at most ``|scale| * |<image_i, text_j>| + |bias| + log 2``, and
    ``|<image_i, text_j>| <= d * max|image| * max|text|``; a conditional logit sums at most
    ``terms`` losses per model. The softmax loss's logits are smaller: per model, one matching
    logit and two log-sum-exps over at most ``b`` selected items, each at most
    ``|scale| * d * max|image| * max|text| + log b``, within the same bound. Computed in
    Python floats, one read per value.
    """
    if _lazy(models, backend):
        return
    pair = 0.0
    for _, m, _ in models:
        width = m.image.shape[1]
        peak = float(peak_magnitude(m.image, xp)) * float(peak_magnitude(m.text, xp))
        pair += abs(float(m.scale)) * width * peak + abs(float(m.bias)) + 1.0
    _check_gain_fits_pairs(gain, pair, models, terms, xp, noise)


def _check_gain_fits_pairs(
    gain: float,
    pair: float,
    models: list[tuple[str, PairEmbeddings, int]],
    terms: int,
    xp: Any,
    noise: Any,
) -> None:
    """:func:`jestcore._validation.check_gain_fits` of ``terms`` pair losses of at most ``pair``."""
    v.check_gain_fits(
        gain,
        terms * pair,
        xp,
        _logit_dtype(models, xp, noise),
        f"{terms} pair losses of at most {pair:.4g} each, from the embeddings' magnitudes",
    )


def select_embeddings(
    learner: Any,
    reference: Any,
    seed: Any,
    noise: Any,
    *,
    score: str,
    sizes: tuple[int, ...],
    greedy: bool,
    block_size: int,
    gain: Any,
    loss: str = "sigmoid",
) -> Any:
    """The work of :func:`joint_select_embeddings` on checked arguments (traceable)."""
    models = _models(learner, reference, score)
    arrays = [getattr(m, f) for _, m, _ in models for f in ("image", "text")]
    xp = namespace_of(*arrays, noise, name="embeddings, noise")
    n = arrays[0].shape[0]
    terms = make_terms(models, xp, noise, loss=loss)
    noise = noise_rows(seed, noise, greedy, len(sizes), n, xp, device_of(arrays[0]))
    return select_terms(terms, sizes, noise, xp, block_size=block_size, gain=gain, loss=loss)


def select_terms(
    terms: list[Any],
    sizes: tuple[int, ...],
    noise: Any,
    xp: Any,
    *,
    block_size: int,
    gain: Any,
    loss: str,
    pick: Callable[[Any, int], Any] | None = None,
    offset: Any = 0,
) -> Any:
    """The chunk loop over the models' terms, for either loss.

    Sigmoid: the conditional logits, updated chunk by chunk. Softmax: the running log-sum-exps
    they are read from. ``pick`` and ``offset`` as in :func:`blocked_select` (e.g. sharded).
    """
    backend = get_backend(xp)
    first = diagonal(terms)
    if loss == "softmax":
        state, update = (
            softmax_state(terms, first),
            softmax_update(terms, first, block_size, backend),
        )
        logits_of: Callable[[Any], Any] | None = softmax_logits
    else:
        state, update, logits_of = first, embeddings_update(terms, block_size, backend), None
    return blocked_select(
        state, sizes, noise, update, xp, gain=gain, pick=pick, offset=offset, logits_of=logits_of
    )


def diagonal(terms: list[Any]) -> Any:
    """The conditional logits of the first chunk: the sum of every model's signed diagonal."""
    logits = terms[0].diagonal()
    for t in terms[1:]:
        logits = logits + t.diagonal()
    return logits


def embeddings_update(terms: list[Any], block_size: int, backend: Any) -> Callable[[Any, Any], Any]:
    """``(logits, idx) -> logits`` plus every term's off-diagonal sums, in row blocks.

    Each of the four products (per model: the chunk's image rows against every text, and its
    text rows against every image) runs over the rows ``idx`` in nearly equal blocks of at most
    ``block_size`` (the backend's ``block_loop``: a scan under ``jax.jit``), one product after
    the other, so that one ``block_size x N`` product (and its softplus) is live at a time,
    under ``jax.jit`` too (XLA would otherwise hold all four products of a block at once).
    """

    def update(logits: Any, idx: Any) -> Any:
        for t in terms:
            for side in (0, 1):

                def add(acc: Any, block: Any, t: Any = t, side: int = side) -> Any:
                    return acc + t.half_sums(block, side)

                logits = backend.block_loop(add, logits, idx, block_size)
        return logits

    return update


def softmax_state(terms: list[Any], first: Any) -> tuple[Any, tuple[Any, ...]]:
    """The softmax selection's state before chunk 0: ``(logits, running log-sum-exps)``.

    The logits are the signed ``u_i`` (``first``); each model has two log-sum-exps over the
    selected set (none yet: ``-inf``), side 0 ``logsumexp_j L_ji`` and side 1
    ``logsumexp_j L_ij``.
    """
    xp = terms[0].xp
    empty = xp.full_like(first, -xp.inf)
    return first, tuple(empty for _ in range(2 * len(terms)))


def softmax_logits(state: tuple[Any, tuple[Any, ...]]) -> Any:
    """The conditional logits held by a softmax selection's state."""
    return state[0]


def softmax_update(
    terms: list[Any], first: Any, block_size: int, backend: Any
) -> Callable[[Any, Any], Any]:
    """``(state, idx) -> state`` with the chunk ``idx`` merged into every running log-sum-exp.

    The same four products per chunk as :func:`embeddings_update`, in the same row blocks (the
    backend's ``block_loop``); each block's column log-sum-exp (max-shifted) is merged into the
    running one with ``logaddexp``. Then the logits are ``first + sum over models of
    sign * (lse_0 + lse_1) / 2``.
    """
    xp = terms[0].xp

    def update(state: Any, idx: Any) -> Any:
        _, lses = state
        merged = []
        for i, t in enumerate(terms):
            for side in (0, 1):

                def add(acc: Any, block: Any, t: Any = t, side: int = side) -> Any:
                    return xp.logaddexp(acc, t.products(t.rows(block, side), side))

                merged.append(backend.block_loop(add, lses[2 * i + side], idx, block_size))
        logits = first
        for i, t in enumerate(terms):
            logits = logits + (0.5 * t.sign) * (merged[2 * i] + merged[2 * i + 1])
        return logits, tuple(merged)

    return update


def check_model_shapes(
    models: list[tuple[str, PairEmbeddings, int]], xp: Any, *, values: bool = True
) -> int:
    """Dtypes, shapes, a common N and scale/bias of each ``(name, embeddings, sign)``.

    ``values=False`` leaves array scales and biases unread, for :func:`check_embedding_values`.

    Returns:
        The number of examples N that every model embeds.
    """
    n = None
    for name, m, _ in models:
        v.check_floating(f"{name}.image", m.image, xp, ndim=2)
        v.check_floating(f"{name}.text", m.text, xp, ndim=2)
        v.check_nonempty(f"{name}.image", m.image)
        if m.image.shape != m.text.shape:
            raise ValueError(
                f"{name}.image and {name}.text must have the same shape (N, d), got "
                f"{tuple(m.image.shape)} and {tuple(m.text.shape)}"
            )
        if n is not None and m.image.shape[0] != n:
            raise ValueError(
                f"learner and reference must embed the same N examples, got N = {n} and "
                f"{m.image.shape[0]}"
            )
        n = m.image.shape[0]
        check_scale_bias(m.scale, m.bias, xp, prefix=f"{name}.", values=values)
    assert n is not None
    return n


def _check_embeddings(
    learner: Any, reference: Any, score: str, *, values: bool = True, **others: Any
) -> tuple[Any, int, Any, list[tuple[str, PairEmbeddings, int]]]:
    """Static checks of the models that ``score`` needs (types, shapes, namespace, device).

    ``others`` are further arrays of the call (e.g. ``noise``), by name: they must share the
    embeddings' namespace and device. ``values=False``: array scales and biases are not read
    (see :func:`check_model_shapes`).

    Returns:
        ``(xp, N, device, [(name, embeddings, sign), ...])``.
    """
    models = _models(learner, reference, score)
    checked = models + _unused_models(learner, reference, score)
    arrays = {f"{name}.{f}": getattr(m, f) for name, m, _ in checked for f in ("image", "text")}
    xp = namespace_of(*arrays.values(), *others.values(), name=", ".join([*arrays, *others]))
    n = check_model_shapes(checked, xp, values=values)
    scalars = {f"{name}.{f}": getattr(m, f) for name, m, _ in checked for f in ("scale", "bias")}
    return xp, n, same_device({**arrays, **scalars, **others}), models


def _build_terms(
    models: list[tuple[str, PairEmbeddings, int]], xp: Any, loss: str = "sigmoid"
) -> list[_Terms]:
    """Checks that the embeddings are finite, then prepares each model's terms.

    Terms accumulate in float32, or float64 when an input is float64.
    """
    backend = get_backend(xp)
    for name, m, _ in models:
        v.check_finite(f"{name}.image", m.image, xp, backend)
        v.check_finite(f"{name}.text", m.text, xp, backend)
    return make_terms(models, xp, loss=loss)


def make_terms(
    models: list[tuple[str, PairEmbeddings, int]], xp: Any, *others: Any, loss: str = "sigmoid"
) -> list[_Terms]:
    """Each model's signed terms, in float32, or float64 when an input (``others`` too) is.

    ``loss`` picks the kind: :class:`_Terms` (sigmoid) or :class:`_SoftmaxTerms`.
    """
    kind = _SoftmaxTerms if check_loss(loss) == "softmax" else _Terms
    dtype = _logit_dtype(models, xp, *others)
    return [kind(m, sign, dtype, xp, get_backend(xp)) for _, m, sign in models]


def _logit_dtype(models: list[tuple[str, PairEmbeddings, int]], xp: Any, *others: Any) -> Any:
    """float32, or float64 when an embedding (or another input, e.g. noise) is float64."""
    return xp.result_type(
        xp.float32,
        *(a.dtype for _, m, _ in models for a in m[:2]),
        *(a.dtype for a in others if a is not None),
    )


class _Terms:
    """One model's signed contribution to the conditional logits."""

    def __init__(self, m: PairEmbeddings, sign: int, dtype: Any, xp: Any, backend: Any):
        self.xp, self.backend, self.sign = xp, backend, sign
        self.image = xp.astype(m.image, dtype, copy=False)
        self.text = xp.astype(m.text, dtype, copy=False)
        self.scale, self.bias = (
            a if isinstance(a, int | float) else xp.astype(a, dtype) for a in (m.scale, m.bias)
        )

    def diagonal(self) -> Any:
        """Signed losses of matching pairs, ``softplus(-(scale * <image_i, text_i> + bias))``."""
        xp = self.xp
        logit = self.scale * xp.sum(self.image * self.text, axis=1) + self.bias
        return self.sign * self.backend.softplus(-logit)

    def off_diagonal_sums(self, idx: Any) -> Any:
        """For every m, the signed ``sum_{j in idx} l(image_j, text_m) + l(image_m, text_j)``.

        Only candidates m outside ``idx`` use it, so every pair is off-diagonal.
        """
        return self.half_sums(idx, 0) + self.half_sums(idx, 1)

    def half_sums(self, idx: Any, side: int) -> Any:
        """One half of :meth:`off_diagonal_sums` (signed).

        Side 0 is ``sum_j l(image_j, text_m)``, side 1 ``sum_j l(image_m, text_j)``.

        The transpose is taken here, next to the product, so that under ``jax.jit`` XLA folds
        it into the matrix product instead of keeping a transposed copy of the embeddings.
        """
        return self.sign * self.products(self.rows(idx, side), side)

    def rows(self, idx: Any, side: int) -> Any:
        """Rows ``idx`` of the image (side 0) or text (side 1) embeddings."""
        return self.xp.take(self.image if side == 0 else self.text, idx, axis=0)

    def products(self, rows: Any, side: int) -> Any:
        """Column sums of ``softplus(scale * rows @ other.T + bias)``, unsigned."""
        other = self.text if side == 0 else self.image
        product = rows @ self.xp.matrix_transpose(other)
        return self.backend.sum_softplus(product, self.scale, self.bias)


class _SoftmaxTerms(_Terms):
    """One model's signed contribution to the softmax (CLIP) loss's conditional logits.

    The interface of :class:`_Terms`, with the softmax loss's terms: the diagonal is the signed
    ``u_i = -L_ii`` and :meth:`products` the column log-sum-exp of the pairwise logits
    ``L = scale * rows @ other.T`` (unsigned; the bias is left out, as it cancels).
    """

    def diagonal(self) -> Any:
        """Signed unconditional losses ``u_i = -scale * <image_i, text_i>``."""
        return -self.sign * (self.scale * self.xp.sum(self.image * self.text, axis=1))

    def products(self, rows: Any, side: int) -> Any:
        """Column log-sum-exps of ``scale * rows @ other.T``, unsigned, max-shifted."""
        other = self.text if side == 0 else self.image
        product = rows @ self.xp.matrix_transpose(other)
        return self.backend.logsumexp_columns(product, self.scale)
