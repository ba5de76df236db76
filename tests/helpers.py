"""Assertion helpers shared by the tests. Helpers raise; they never return a verdict to ignore."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import oracle

#: ``perturbed(before, k) -> (values, magnitudes)``: float64 perturbed logits of chunk ``k`` given
#: the indices selected before that chunk, and for each candidate the sum of the absolute values
#: of the terms that make up its logit (the scale of its rounding error).
Perturbed = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]

#: Relative tolerances for near-ties, per precision of the computation under test. The rounding
#: error of a logit is at most (a small multiple of) eps times the sum of |terms|; 1e-9 in float64
#: is ~5e6 eps and 2e-5 in float32 is ~170 eps: far below any real difference the tests draw.
RTOL = {"float64": 1e-9, "float32": 2e-5}


def joint_perturbed(scores: Any, noise: Any, magnitude: Any = None, *, gain: float) -> Perturbed:
    """Perturbed conditional logits of joint selection, recomputed in float64 from scratch.

    Args:
        scores: ``(N, N)`` score matrix.
        noise: ``(n_chunks, N)`` noise (``None`` for greedy).
        gain: The score gain: the values are ``gain * logits + noise``.
        magnitude: ``(N, N)`` non-negative bound on each entry's absolute rounding error scale
            (default ``|scores|``); e.g. for scores computed from embeddings it includes
            ``scale * sum_k |x_ik| |y_jk| + |bias|``.
    """
    s = np.asarray(scores, dtype=np.float64)
    m = np.abs(s) if magnitude is None else np.asarray(magnitude, dtype=np.float64)
    g = None if noise is None else np.asarray(noise, dtype=np.float64)

    def perturbed(before: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        before = np.asarray(before, dtype=np.int64)
        values = np.diag(s) + s[before, :].sum(axis=0) + s[:, before].sum(axis=1)
        mags = np.diag(m) + m[before, :].sum(axis=0) + m[:, before].sum(axis=1)
        values, mags = gain * values, gain * mags
        if g is not None:
            values = values + g[k]
            mags = mags + np.abs(g[k])
        return values, mags

    return perturbed


def as_indices(x: Any) -> np.ndarray:
    """A selection result as a 1-D int64 NumPy array."""
    a = np.asarray(x)
    assert a.ndim == 1, f"expected a 1-D index array, got shape {a.shape}"
    assert np.issubdtype(a.dtype, np.integer), f"expected integer indices, got {a.dtype}"
    return a.astype(np.int64)


def assert_same_selection(
    actual: Any,
    expected: Any,
    *,
    sizes: Sequence[int],
    n: int,
    perturbed: Perturbed,
    rtol: float,
) -> int | None:
    """Asserts that two selections are equal, tolerating only a genuine floating near-tie.

    Both must be valid selections (``sum(sizes)`` distinct indices in ``[0, n)``). At the first
    position where they differ, both items belong to the same chunk and were chosen after the
    same items, so their perturbed logits are recomputed in float64; they must agree to within
    ``rtol`` times the scale of their terms, else the selections really differ and this raises.
    After a tolerated near-tie the rest may legitimately differ (later chunks condition on
    different items), so comparison stops there.

    Returns:
        The position of the tolerated near-tie, or ``None`` when the selections are identical.
    """
    a = as_indices(actual)
    e = as_indices(expected)
    total = int(sum(sizes))
    for name, x in (("actual", a), ("expected", e)):
        assert x.shape == (total,), f"{name} has shape {x.shape}, expected ({total},)"
        assert len(set(x.tolist())) == total, f"{name} repeats an index: {x.tolist()}"
        assert x.min() >= 0 and x.max() < n, f"{name} has an index outside [0, {n}): {x}"
    differ = np.flatnonzero(a != e)
    if differ.size == 0:
        return None
    p = int(differ[0])
    bounds = np.cumsum([0, *sizes])
    k = int(np.searchsorted(bounds, p, side="right") - 1)
    values, mags = perturbed(e[: bounds[k]], k)
    ia, ie = int(a[p]), int(e[p])
    gap = abs(values[ia] - values[ie])
    tol = rtol * max(mags[ia], mags[ie])
    if not (np.isfinite(values[ia]) and np.isfinite(values[ie]) and gap <= tol):
        raise AssertionError(
            f"selections differ at position {p} (chunk {k}): actual picks {ia} with perturbed "
            f"logit {values[ia]!r}, expected picks {ie} with {values[ie]!r}; the gap {gap:.3g} "
            f"exceeds the near-tie tolerance {tol:.3g}\nactual:   {a.tolist()}\n"
            f"expected: {e.tolist()}"
        )
    return p


def assert_matches_oracle(
    actual: Any,
    scores: Any,
    n_select: int,
    n_chunks: int,
    noise: Any,
    *,
    gain: float,
    rtol: float = RTOL["float64"],
    magnitude: Any = None,
) -> int | None:
    """Asserts ``actual`` equals the literal Algorithm 1 on ``scores`` with ``noise`` and ``gain``.

    ``noise=None`` means greedy. Returns as :func:`assert_same_selection`.
    """
    expected = oracle.select(scores, n_select, n_chunks, noise, gain=gain)
    return assert_same_selection(
        actual,
        expected,
        sizes=oracle.split_chunks(n_select, n_chunks),
        n=np.asarray(scores).shape[0],
        perturbed=joint_perturbed(scores, noise, magnitude, gain=gain),
        rtol=rtol,
    )


def embedding_magnitude(learner: Any, reference: Any, score: str) -> np.ndarray:
    """Rounding-error scale of each entry of :func:`oracle.dense_scores` from embeddings.

    Per model: ``|loss_ij| + scale * sum_k |image_ik| |text_jk| + |bias|`` (the loss's error is at
    most its logit's error, softplus being 1-Lipschitz), summed over the models the score uses.
    """
    total = 0.0
    models = {"learnability": (learner, reference), "hard_learner": (learner,)}
    for m in models.get(score, (reference,)):
        image, text, scale, bias = (np.asarray(x, dtype=np.float64) for x in m)
        loss = oracle.pairwise_sigmoid_loss(image, text, scale, bias)
        total = total + loss + abs(scale) * (np.abs(image) @ np.abs(text).T) + abs(bias)
    return np.asarray(total)


def random_embeddings(
    rng: np.random.Generator, n: int, d: int, *, normalise: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Random float64 image and text embeddings, L2-normalised rows by default."""
    image = rng.standard_normal((n, d))
    text = rng.standard_normal((n, d))
    if normalise:
        image /= np.linalg.norm(image, axis=1, keepdims=True)
        text /= np.linalg.norm(text, axis=1, keepdims=True)
    return image, text


def float32_models(
    seed: int, n: int, d: int = 6, *, reference: tuple[float, float] | None = None
) -> tuple[Any, Any]:
    """A learner and a reference (NumPy ``PairEmbeddings``) with normalised float32 rows.

    Scale and bias are 0-d float32: the learner's 10 and -5, the reference's ``reference``
    (default: drawn from ``[1, 20)`` and ``[-8, 0)``).
    """
    from jestcore import PairEmbeddings

    rng = np.random.default_rng(seed)

    def model(scale: float, bias: float) -> PairEmbeddings:
        x = rng.standard_normal((2, n, d))
        x /= np.linalg.norm(x, axis=-1, keepdims=True)
        return PairEmbeddings(*x.astype(np.float32), np.float32(scale), np.float32(bias))

    learner = model(10.0, -5.0)
    return learner, model(*(reference or (rng.uniform(1, 20), rng.uniform(-8, 0))))


def assert_same_embeddings_selection(
    got: Any,
    expected: Any,
    models: tuple[Any, Any],
    score: str,
    n_select: int,
    n_chunks: int,
    noise: Any,
    *,
    gain: float = 100.0,
    rtol: float = RTOL["float32"],
) -> None:
    """:func:`assert_same_selection` for two selections from the embeddings ``models``.

    ``noise`` and ``gain`` are the ones both selections used (``noise=None``: greedy; the gain
    defaults to the library's).
    """
    learner, reference = models
    assert_same_selection(
        got,
        expected,
        sizes=oracle.split_chunks(n_select, n_chunks),
        n=(learner if learner is not None else reference).image.shape[0],
        perturbed=joint_perturbed(
            oracle.dense_scores(learner, reference, score),
            noise,
            embedding_magnitude(learner, reference, score),
            gain=gain,
        ),
        rtol=rtol,
    )


def make_models(
    seed: int, n: int, d_learner: int, d_reference: int, params: tuple, normalise: bool = True
) -> tuple[Any, Any]:
    """Two float64 models of different widths; ``params`` = (learner scale, bias, ref ...)."""
    from jestcore import PairEmbeddings

    rng = np.random.default_rng(seed)
    ls, lb, rs, rb = params
    learner = PairEmbeddings(*random_embeddings(rng, n, d_learner, normalise=normalise), ls, lb)
    reference = PairEmbeddings(*random_embeddings(rng, n, d_reference, normalise=normalise), rs, rb)
    return learner, reference


def needed(learner: Any, reference: Any, score: str, keep_unused: bool = False) -> tuple[Any, Any]:
    """The (learner, reference) arguments for ``score``, the unused model ``None``."""
    if keep_unused:
        return learner, reference
    return (
        learner if score != "easy_reference" else None,
        reference if score != "hard_learner" else None,
    )


def to_namespace(name: str, x: np.ndarray) -> Any:
    """``x`` as an array of the backend called ``name`` ("generic": array-api-strict)."""
    if name == "torch":
        import torch

        return torch.from_numpy(x.copy())
    if name == "jax":
        import jax.numpy as jnp

        return jnp.asarray(x)
    if name == "generic":
        import array_api_strict

        return array_api_strict.asarray(x)
    return x


def peak_traced_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated (as reported to tracemalloc, which NumPy does) while ``fn`` runs."""
    import tracemalloc

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
