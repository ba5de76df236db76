"""Same seed, same selection: PyTorch against NumPy on the matrix and embedding paths.

Inputs are drawn with NumPy and converted; a difference is tolerated only where the two picks'
perturbed logits, recomputed in float64, form a genuine floating near-tie (``helpers``).
"""

from __future__ import annotations

import numpy as np
import oracle
import torch
from helpers import RTOL, assert_same_selection, embedding_magnitude, joint_perturbed
from hypothesis import given
from hypothesis import strategies as st

import jestcore


@st.composite
def selection_problems(draw):
    n = draw(st.integers(2, 40))
    n_select = draw(st.integers(1, n))
    n_chunks = draw(st.integers(1, n_select))
    seed = draw(st.integers(0, 2**32 - 1))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    return n, n_select, n_chunks, seed, dtype


@given(selection_problems(), st.integers(0, 2**16))
def test_matrix_path_matches_numpy(problem, data_seed):
    n, n_select, n_chunks, seed, dtype = problem
    rng = np.random.default_rng(data_seed)
    scores = rng.normal(size=(n, n)).astype(dtype)
    if data_seed % 3 == 0:
        scores = np.round(scores)  # exact ties: the order rule must agree exactly
    expected = jestcore.joint_select(scores, n_select, n_chunks=n_chunks, seed=seed)
    got = jestcore.joint_select(torch.from_numpy(scores), n_select, n_chunks=n_chunks, seed=seed)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64
    noise = jestcore.gumbel_noise(seed, (n_chunks, n), xp=np)
    assert_same_selection(
        got.numpy(),
        expected,
        sizes=jestcore.chunk_sizes(n_select, n_chunks),
        n=n,
        perturbed=joint_perturbed(scores, noise),
        rtol=RTOL[dtype],
    )


@given(
    selection_problems(),
    st.integers(1, 8),
    st.sampled_from(["learnability", "hard_learner", "easy_reference"]),
    st.integers(0, 2**16),
)
def test_embedding_path_matches_numpy(problem, d, score, data_seed):
    n, n_select, n_chunks, seed, dtype = problem
    rng = np.random.default_rng(data_seed)
    models = []
    for _ in range(2):
        image, text = (rng.normal(size=(n, d)) / np.sqrt(d) for _ in range(2))
        scale, bias = float(rng.uniform(1, 20)), float(rng.uniform(-10, 2))
        models.append((image.astype(dtype), text.astype(dtype), scale, bias))

    def pairs(convert):
        return [jestcore.PairEmbeddings(convert(i), convert(t), s, b) for i, t, s, b in models]

    kwargs = {"n_chunks": n_chunks, "score": score, "seed": seed}
    expected = jestcore.joint_select_embeddings(*pairs(np.asarray), n_select, **kwargs)
    got = jestcore.joint_select_embeddings(*pairs(torch.from_numpy), n_select, **kwargs)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64
    noise = jestcore.gumbel_noise(seed, (n_chunks, n), xp=np)
    assert_same_selection(
        got.numpy(),
        expected,
        sizes=jestcore.chunk_sizes(n_select, n_chunks),
        n=n,
        perturbed=joint_perturbed(
            oracle.dense_scores(*models, score), noise, embedding_magnitude(*models, score)
        ),
        rtol=RTOL[dtype],
    )


@given(st.integers(1, 300), st.integers(0, 2**32 - 1), st.data())
def test_independent_path_matches_numpy(n, seed, data):
    scores = np.random.default_rng(seed % 1000).normal(size=n)
    if seed % 3 == 0:
        scores = np.round(scores)  # exact ties in the scores
    n_select = data.draw(st.integers(1, n))
    expected = jestcore.independent_select(scores, n_select, seed=seed)
    got = jestcore.independent_select(torch.from_numpy(scores), n_select, seed=seed)
    g = jestcore.gumbel_noise(seed, (n,), xp=np).astype(np.float64)

    def perturbed(before, k):
        return scores + g, np.abs(scores) + np.abs(g)

    # The noise is float32 and its log may differ by an ulp between frameworks: float32 rtol.
    assert_same_selection(
        got.numpy(), expected, sizes=[n_select], n=n, perturbed=perturbed, rtol=RTOL["float32"]
    )
