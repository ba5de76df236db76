"""Same seed, same selection: PyTorch against NumPy, and the PyTorch adapter against the spec.

Spec on PyTorch against NumPy: inputs are drawn with NumPy and converted; a difference is
tolerated only where the two picks' perturbed logits, recomputed in float64, form a genuine
floating near-tie (``helpers``).

The adapter (:func:`~jestcore.adapters.torch.select_batch`, :class:`JESTSelector`) against the
spec on the same tensors and seeds: the adapter only converts and calls the spec, so the indices
are equal exactly, and the sub-batch sizes are :func:`jestcore.sub_batch_size`'s.
"""

from __future__ import annotations

import numpy as np
import oracle
import torch
from helpers import RTOL, assert_same_selection, embedding_magnitude, joint_perturbed
from hypothesis import given
from hypothesis import strategies as st
from jestcore.adapters.torch import JESTSelector, select_batch

import jestcore


@st.composite
def selection_problems(draw):
    n = draw(st.integers(2, 40))
    n_select = draw(st.integers(1, n))
    n_chunks = draw(st.integers(1, n_select))
    seed = draw(st.integers(0, 2**32 - 1))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    return n, n_select, n_chunks, seed, dtype


GAINS = (1.0, 3.5, 100.0)


def assert_same_joint(got, expected, n_chunks, seed, scores, magnitude, rtol, gain):
    """PyTorch's joint selection is NumPy's, up to genuine near-ties of the float64 logits."""
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64
    n, n_select = scores.shape[0], expected.shape[0]
    noise = jestcore.gumbel_noise(seed, (n_chunks, n), xp=np)
    assert_same_selection(
        got.numpy(),
        expected,
        sizes=jestcore.chunk_sizes(n_select, n_chunks),
        n=n,
        perturbed=joint_perturbed(scores, noise, magnitude, gain=gain),
        rtol=rtol,
    )


@given(selection_problems(), st.integers(0, 2**16), st.sampled_from(GAINS))
def test_matrix_path_matches_numpy(problem, data_seed, gain):
    n, n_select, n_chunks, seed, dtype = problem
    rng = np.random.default_rng(data_seed)
    scores = rng.normal(size=(n, n)).astype(dtype)
    if data_seed % 3 == 0:
        scores = np.round(scores)  # exact ties: the order rule must agree exactly
    call = {"n_chunks": n_chunks, "seed": seed, "gain": gain}
    expected = jestcore.joint_select(scores, n_select, **call)
    got = jestcore.joint_select(torch.from_numpy(scores), n_select, **call)
    assert_same_joint(got, expected, n_chunks, seed, scores, None, RTOL[dtype], gain)


@given(
    selection_problems(),
    st.integers(1, 8),
    st.sampled_from(["learnability", "hard_learner", "easy_reference"]),
    st.integers(0, 2**16),
    st.sampled_from(GAINS),
)
def test_embedding_path_matches_numpy(problem, d, score, data_seed, gain):
    n, n_select, n_chunks, seed, dtype = problem
    rng = np.random.default_rng(data_seed)
    models = []
    for _ in range(2):
        image, text = (rng.normal(size=(n, d)) / np.sqrt(d) for _ in range(2))
        scale, bias = float(rng.uniform(1, 20)), float(rng.uniform(-10, 2))
        models.append((image.astype(dtype), text.astype(dtype), scale, bias))

    def pairs(convert):
        return [jestcore.PairEmbeddings(convert(i), convert(t), s, b) for i, t, s, b in models]

    kwargs = {"n_chunks": n_chunks, "score": score, "seed": seed, "gain": gain}
    expected = jestcore.joint_select_embeddings(*pairs(np.asarray), n_select, **kwargs)
    got = jestcore.joint_select_embeddings(*pairs(torch.from_numpy), n_select, **kwargs)
    dense, magnitude = oracle.dense_scores(*models, score), embedding_magnitude(*models, score)
    assert_same_joint(got, expected, n_chunks, seed, dense, magnitude, RTOL[dtype], gain)


@given(st.integers(1, 300), st.integers(0, 2**32 - 1), st.sampled_from(GAINS), st.data())
def test_independent_path_matches_numpy(n, seed, gain, data):
    scores = np.random.default_rng(seed % 1000).normal(size=n)
    if seed % 3 == 0:
        scores = np.round(scores)  # exact ties in the scores
    n_select = data.draw(st.integers(1, n))
    expected = jestcore.independent_select(scores, n_select, seed=seed, gain=gain)
    got = jestcore.independent_select(torch.from_numpy(scores), n_select, seed=seed, gain=gain)
    g = jestcore.gumbel_noise(seed, (n,), xp=np).astype(np.float64)

    def perturbed(before, k):
        return gain * scores + g, gain * np.abs(scores) + np.abs(g)

    # The noise is float32 and its log may differ by an ulp between frameworks: float32 rtol.
    assert_same_selection(
        got.numpy(), expected, sizes=[n_select], n=n, perturbed=perturbed, rtol=RTOL["float32"]
    )


# ----------------------------------------------------------------- the adapter against the spec

#: (N, f) pairs; several where rounding half up and flooring differ (e.g. 9 at 0.8 keeps 2).
GRID = [(n, f) for n in (1, 2, 3, 5, 9, 10, 13, 33, 64, 101) for f in (0.0, 0.5, 0.75, 0.8, 0.9)]


def test_adapter_sub_batch_sizes_are_the_spec_rule():
    assert any(
        jestcore.sub_batch_size(n, filter_ratio=f) != int(n * (1 - f) + 1e-9) for n, f in GRID
    )
    gen = torch.Generator().manual_seed(0)
    for n, f in GRID:
        expected = jestcore.sub_batch_size(n, filter_ratio=f)
        got = select_batch(torch.arange(n), scores=torch.zeros(n), filter_ratio=f, seed=0)
        assert got.indices.shape == (expected,), (n, f)
        pair = jestcore.PairEmbeddings(torch.randn(n, 3, generator=gen), torch.randn(n, 3), 2.0, 0)
        selector = JESTSelector(filter_ratio=f, n_chunks=16, score="hard_learner", seed=1)
        assert selector(torch.arange(n), pair).indices.shape == (expected,), (n, f)


def _models(n: int, seed: int) -> list[jestcore.PairEmbeddings]:
    gen = torch.Generator().manual_seed(seed)
    return [
        jestcore.PairEmbeddings(
            torch.randn(n, 4, generator=gen), torch.randn(n, 4, generator=gen), 5.0, -2.0
        )
        for _ in range(2)
    ]


@given(
    st.integers(1, 40),
    st.floats(0.0, 0.95),
    st.integers(1, 20),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["learnability", "hard_learner", "easy_reference"]),
    st.sampled_from(GAINS),
)
def test_adapter_indices_are_the_spec_selection(n, f, n_chunks, seed, score, gain):
    learner, reference = _models(n, seed % 1000)
    k = jestcore.sub_batch_size(n, filter_ratio=f)
    chunks = min(n_chunks, k)
    kw = {"filter_ratio": f, "n_chunks": n_chunks, "score": score, "seed": seed, "gain": gain}
    batch = torch.arange(n)
    # joint selection from embeddings
    got = select_batch(batch, learner, reference, **kw)
    expected = jestcore.joint_select_embeddings(
        learner, reference, k, n_chunks=chunks, score=score, seed=seed, gain=gain
    )
    assert got.indices.tolist() == expected.tolist()
    assert got.batch.tolist() == expected.tolist()
    # joint selection from a score matrix
    scores = jestcore.sigmoid_loss_matrix(
        learner.image, learner.text, scale=learner.scale, bias=learner.bias
    )
    got = select_batch(batch, scores=scores, **kw)
    assert (
        got.indices.tolist()
        == jestcore.joint_select(scores, k, n_chunks=chunks, seed=seed, gain=gain).tolist()
    )
    # independent selection: per-example scores, and per-example losses
    losses = [torch.diagonal(scores), torch.diagonal(scores).flip(0)]
    got = select_batch(batch, scores=losses[0], **kw)
    assert (
        got.indices.tolist()
        == jestcore.independent_select(losses[0], k, seed=seed, gain=gain).tolist()
    )
    per_example = {
        "learnability": jestcore.learnability(*losses),
        "hard_learner": jestcore.hard_learner(losses[0]),
        "easy_reference": jestcore.easy_reference(losses[1]),
    }[score]
    got = select_batch(batch, *losses, **kw)
    assert (
        got.indices.tolist()
        == jestcore.independent_select(per_example, k, seed=seed, gain=gain).tolist()
    )
    # the selector: step t draws with fold_in(seed, t)
    selector = JESTSelector(filter_ratio=f, n_chunks=n_chunks, score=score, seed=seed, gain=gain)
    for t in range(2):
        got = selector(batch, learner, reference)
        expected = jestcore.joint_select_embeddings(
            learner, reference, k, n_chunks=chunks, score=score, seed=jestcore.fold_in(seed, t),
            gain=gain,
        )  # fmt: skip
        assert got.indices.tolist() == expected.tolist()
