"""The pairwise sigmoid loss against an independent formula, and the signs of the three scores."""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from helpers import random_embeddings
from hypothesis import given
from hypothesis import strategies as st

from jestcore import easy_reference, hard_learner, learnability, sigmoid_loss_matrix


@given(
    st.integers(1, 12),
    st.integers(1, 8),
    st.sampled_from([0.5, 1.0, 10.0, 100.0, 300.0]),
    st.sampled_from([-10.0, -1.0, 0.0, 3.0]),
    st.integers(0, 2**31),
    st.booleans(),
)
def test_sigmoid_loss_matrix_matches_the_literal_formula(n, d, scale, bias, seed, normalise):
    image, text = random_embeddings(np.random.default_rng(seed), n, d, normalise=normalise)
    got = sigmoid_loss_matrix(image, text, scale=scale, bias=bias)
    assert got.dtype == np.float64 and got.shape == (n, n)
    assert np.isfinite(got).all() and (got >= 0).all()
    expected = oracle.pairwise_sigmoid_loss(image, text, scale, bias)
    # rounding of the logit scale * <x, y> + b carries into the loss (softplus is 1-Lipschitz)
    err = 4 * np.finfo(np.float64).eps * (scale * (np.abs(image) @ np.abs(text).T) + abs(bias))
    assert np.all(np.abs(got - expected) <= err + 4 * np.finfo(np.float64).eps * expected)


def test_sigmoid_loss_matrix_by_hand():
    image = np.array([[1.0, 0.0], [0.0, 1.0]])
    text = np.array([[0.6, 0.8], [0.0, 1.0]])
    got = sigmoid_loss_matrix(image, text, scale=2.0, bias=-1.0)
    logit = 2.0 * np.array([[0.6, 0.0], [0.8, 1.0]]) - 1.0
    expected = np.array(
        [
            [np.log1p(np.exp(-logit[0, 0])), np.log1p(np.exp(logit[0, 1]))],
            [np.log1p(np.exp(logit[1, 0])), np.log1p(np.exp(-logit[1, 1]))],
        ]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_scale_and_bias_stay_finite(dtype):
    # temperature 100 and bias -10: logits of +-110; a naive log(1 + exp(x)) overflows in float32
    # at x > 88, and -log(sigmoid(x)) loses everything once exp(-x) underflows.
    rng = np.random.default_rng(0)
    image, text = random_embeddings(rng, 64, 16)
    image[1] = text[1]  # a perfectly matched pair: logit +90, loss ~ exp(-90)
    image[2] = -text[3]  # a perfectly anti-aligned negative pair
    image, text = image.astype(dtype), text.astype(dtype)
    for scale, bias in [(100.0, -10.0), (1000.0, 10.0)]:
        got = sigmoid_loss_matrix(image, text, scale=scale, bias=bias)
        assert got.dtype == dtype
        assert np.isfinite(got).all() and (got >= 0).all()
        expected = oracle.pairwise_sigmoid_loss(image, text, scale, bias)
        tol = 8 * np.finfo(dtype).eps * (scale * (np.abs(image) @ np.abs(text).T) + abs(bias))
        assert np.all(np.abs(got - expected) <= tol + 8 * np.finfo(dtype).eps * expected)
    # the matched pair's loss is tiny but positive (no cancellation to 0 or -0 in float64)
    if dtype is np.float64:
        tiny = sigmoid_loss_matrix(image, text, scale=100.0, bias=-10.0)[1, 1]
        np.testing.assert_allclose(tiny, np.exp(-90.0), rtol=1e-6)


def test_scale_and_bias_as_0d_arrays():
    image, text = random_embeddings(np.random.default_rng(1), 7, 3)
    a = sigmoid_loss_matrix(image, text, scale=np.asarray(10.0), bias=np.asarray(-2.0))
    b = sigmoid_loss_matrix(image, text, scale=10.0, bias=-2.0)
    # two calls on different inputs (arrays vs floats): equal to rounding, not bit for bit
    np.testing.assert_allclose(a, b, rtol=4 * np.finfo(np.float64).eps ** 0.5)


def test_sigmoid_loss_matrix_on_every_backend(xp):
    image, text = random_embeddings(np.random.default_rng(2), 20, 8)
    image, text = image.astype(np.float32), text.astype(np.float32)
    expected = sigmoid_loss_matrix(image, text, scale=100.0, bias=-10.0)
    got = sigmoid_loss_matrix(xp.from_numpy(image), xp.from_numpy(text), scale=100.0, bias=-10.0)
    got = xp.to_numpy(got)
    assert got.dtype == np.float32
    # float32 logits of magnitude ~110: a few ulp of 128 absolute (matmul order differs)
    np.testing.assert_allclose(got, expected, rtol=0, atol=64 * np.spacing(np.float32(128)))
    literal = oracle.pairwise_sigmoid_loss(image, text, 100.0, -10.0)
    np.testing.assert_allclose(got, literal, rtol=0, atol=64 * np.spacing(np.float32(128)))


def test_the_sum_of_the_matrix_is_the_siglip_batch_loss():
    # SigLIP's loss of batch B: sum over i, j in B of -log sigmoid(z_ij (t <x_i, y_j> + b)).
    image, text = random_embeddings(np.random.default_rng(3), 9, 4)
    s = sigmoid_loss_matrix(image, text, scale=5.0, bias=-2.0)
    batch = [0, 3, 4, 8]
    direct = 0.0
    for i in batch:
        for j in batch:
            z = 1.0 if i == j else -1.0
            logit = 5.0 * float(image[i] @ text[j]) - 2.0
            direct += float(np.log1p(np.exp(-z * logit)))
    np.testing.assert_allclose(s[np.ix_(batch, batch)].sum(), direct, rtol=1e-12)


def test_learnability_is_learner_minus_reference_with_the_right_signs():
    learner = np.array([[2.0, 0.5], [1.0, 3.0]])
    reference = np.array([[0.5, 0.5], [2.0, 1.0]])
    np.testing.assert_array_equal(learnability(learner, reference), learner - reference)
    # higher learner loss -> higher score; higher reference loss -> lower score
    up = learner + np.array([[1.0, 0.0], [0.0, 0.0]])
    assert learnability(up, reference)[0, 0] > learnability(learner, reference)[0, 0]
    worse_ref = reference + np.array([[1.0, 0.0], [0.0, 0.0]])
    assert learnability(learner, worse_ref)[0, 0] < learnability(learner, reference)[0, 0]
    # learnt by neither -> 0; learnt by the reference only -> positive; by the learner only -> <0
    assert learnability(np.array([1.0, 3.0, 0.1]), np.array([1.0, 0.1, 3.0])).tolist() == [
        0.0,
        2.9,
        -2.9,
    ]


def test_hard_learner_and_easy_reference_signs():
    loss = np.array([0.1, 2.0, 1.0])
    np.testing.assert_array_equal(hard_learner(loss), loss)
    np.testing.assert_array_equal(easy_reference(loss), -loss)
    # hard_learner ranks the highest learner loss first; easy_reference the lowest reference loss
    assert int(np.argmax(hard_learner(loss))) == 1
    assert int(np.argmax(easy_reference(loss))) == 0


def test_scores_on_every_backend(xp):
    rng = np.random.default_rng(4)
    learner = rng.random((5, 5)).astype(np.float32)
    reference = rng.random((5, 5)).astype(np.float32)
    got = learnability(xp.from_numpy(learner), xp.from_numpy(reference))
    # bitwise: one IEEE subtraction per entry, correctly rounded on every backend
    np.testing.assert_array_equal(xp.to_numpy(got), learner - reference)
    np.testing.assert_array_equal(xp.to_numpy(hard_learner(xp.from_numpy(learner))), learner)
    np.testing.assert_array_equal(xp.to_numpy(easy_reference(xp.from_numpy(reference))), -reference)


def test_scores_do_not_modify_inputs():
    learner = np.ones((3, 3))
    reference = np.full((3, 3), 0.5)
    learnability(learner, reference)
    easy_reference(reference)
    assert (learner == 1).all() and (reference == 0.5).all()
