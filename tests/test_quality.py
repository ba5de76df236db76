"""The joint score of a batch, and the selection-quality benchmark's optimum and bounds.

* ``batch_score`` against a literal double sum, on every backend; ``batch_score_embeddings``
  against ``batch_score`` of the literally built score matrix; bad inputs.
* ``bench/selection_quality.py``: its exhaustive search against ``itertools``, the property that
  the exact optimum is at least every selection method's score and at most the upper bound, the
  uniform expectation against the mean over all subsets, the local search's guarantees, the
  planted structure of the synthetic generator, and a ``--quick`` run end to end.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import oracle
import pytest
from helpers import embedding_magnitude, random_embeddings
from hypothesis import given, settings
from hypothesis import strategies as st

import jestcore
from jestcore import PairEmbeddings, batch_score, batch_score_embeddings

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "selection_quality.py"
EPS = np.finfo(np.float64).eps


def _load_bench():
    spec = importlib.util.spec_from_file_location("selection_quality", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["selection_quality"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


sq = _load_bench()


def is_zero_d(x, xp=None) -> bool:
    """A 0-d result of the backend ``xp`` (NumPy when ``None``); NumPy reductions give a NumPy
    scalar (``np.float64``), which array-api-compat passes through and counts as a NumPy array."""
    ok = isinstance(x, np.ndarray | np.generic) if xp is None else xp.is_mine(x)
    return ok and tuple(x.shape) == ()


def literal_batch_score(scores: np.ndarray, indices) -> float:
    """``sum_{i in B} sum_{j in B} S_ij`` by two Python loops, summed exactly."""
    s = np.asarray(scores, dtype=np.float64)
    return math.fsum(float(s[i, j]) for i in indices for j in indices)


def literal_best(scores: np.ndarray, b: int) -> float:
    """The best joint score over every subset of size ``b``, by ``itertools``."""
    n = np.asarray(scores).shape[0]
    return max(literal_batch_score(scores, c) for c in itertools.combinations(range(n), b))


def sum_error_bound(scores: np.ndarray, indices, eps: float) -> float:
    """A bound on the rounding error of any order of summing the b^2 terms."""
    terms = np.abs(np.asarray(scores, dtype=np.float64)[np.ix_(indices, indices)])
    return 2 * terms.size * eps * float(terms.sum())


@st.composite
def matrix_and_batch(draw, max_n=12):
    n = draw(st.integers(1, max_n))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    s = scale * rng.normal(size=(n, n))
    b = draw(st.integers(1, n))
    idx = rng.permutation(n)[:b]
    return s, idx


# ----------------------------------------------------------------------------- batch_score


def test_batch_score_by_hand():
    s = np.arange(9.0).reshape(3, 3)
    assert float(batch_score(s, np.array([0, 2]))) == 0 + 2 + 6 + 8
    assert float(batch_score(s, np.array([2, 0]))) == 16.0
    assert float(batch_score(s, np.array([1]))) == 4.0
    assert float(batch_score(s, np.arange(3))) == 36.0


@given(matrix_and_batch())
def test_batch_score_matches_a_literal_double_sum(problem):
    s, idx = problem
    got = batch_score(s, idx)
    assert is_zero_d(got) and got.dtype == np.float64
    expected = literal_batch_score(s, idx)
    assert abs(float(got) - expected) <= sum_error_bound(s, idx, EPS)


@given(matrix_and_batch(), st.integers(0, 2**31))
def test_batch_score_ignores_the_order_of_the_batch(problem, seed):
    s, idx = problem
    shuffled = np.random.default_rng(seed).permutation(idx)
    gap = abs(float(batch_score(s, idx)) - float(batch_score(s, shuffled)))
    assert gap <= 2 * sum_error_bound(s, idx, EPS)


def test_batch_score_on_every_backend(xp):
    rng = np.random.default_rng(3)
    for n, b in [(1, 1), (7, 3), (40, 40), (64, 17)]:
        s = rng.normal(size=(n, n)).astype(np.float32)
        idx = rng.permutation(n)[:b].astype(np.int64)
        got = batch_score(xp.from_numpy(s), xp.from_numpy(idx))
        assert is_zero_d(got, xp), f"expected a 0-d {xp} array, got {type(got)}"
        assert str(got.dtype).endswith("float32")
        expected = literal_batch_score(s, idx)
        eps32 = float(np.finfo(np.float32).eps)
        assert abs(float(got) - expected) <= sum_error_bound(s, idx, eps32)


def test_batch_score_keeps_the_precision_of_its_input(xp):
    # float64 in, float64 out, except on JAX without x64, where the input is already float32
    rng = np.random.default_rng(4)
    s = rng.normal(size=(30, 30))
    idx = np.array([3, 29, 0, 11, 7])
    got = batch_score(xp.from_numpy(s), xp.from_numpy(idx))
    assert is_zero_d(got, xp)
    dtype = np.float64 if xp.float64 else np.float32
    assert str(got.dtype).endswith(np.dtype(dtype).name)
    error = sum_error_bound(s, idx, float(np.finfo(dtype).eps))
    if dtype is np.float32:  # the input itself was rounded to float32
        error += 2 * float(np.finfo(np.float32).eps) * float(np.abs(s[np.ix_(idx, idx)]).sum())
    assert abs(float(got) - literal_batch_score(s, idx)) <= error


# ----------------------------------------------------------------------------- embeddings path


def _models(rng, n, d, score, scale, bias):
    models = []
    for _ in range(2):
        image, text = random_embeddings(rng, n, d)
        models.append(PairEmbeddings(image, text, scale, bias))
    learner, reference = models
    if score == "hard_learner":
        reference = None
    if score == "easy_reference":
        learner = None
    return learner, reference


@given(
    st.integers(1, 16),
    st.integers(1, 8),
    st.sampled_from(["learnability", "hard_learner", "easy_reference"]),
    st.sampled_from([1.0, 10.0, 100.0]),
    st.sampled_from([-10.0, -5.0, 0.0, 2.0]),
    st.integers(0, 2**31),
    st.data(),
)
def test_batch_score_embeddings_equals_the_matrix_path(n, d, score, scale, bias, seed, data):
    rng = np.random.default_rng(seed)
    learner, reference = _models(rng, n, d, score, scale, bias)
    b = data.draw(st.integers(1, n), label="b")
    idx = rng.permutation(n)[:b]
    block_size = data.draw(st.one_of(st.none(), st.integers(1, b + 2)), label="block_size")
    got = batch_score_embeddings(learner, reference, idx, score=score, block_size=block_size)
    assert is_zero_d(got) and got.dtype == np.float64
    dense = oracle.dense_scores(learner, reference, score)
    expected = float(batch_score(dense, idx))
    # Each entry carries the rounding of its d-term dot product (embedding_magnitude is the
    # scale of that error), then the b^2 entries are summed in some order.
    magnitude = embedding_magnitude(learner, reference, score)[np.ix_(idx, idx)]
    tol = 4 * (d + 2) * EPS * float(magnitude.sum()) + 2 * sum_error_bound(dense, idx, EPS)
    assert abs(float(got) - expected) <= tol


def test_batch_score_embeddings_block_sizes_agree():
    rng = np.random.default_rng(5)
    learner, reference = _models(rng, 50, 6, "learnability", 10.0, -5.0)
    idx = rng.permutation(50)[:23]
    values = [
        float(batch_score_embeddings(learner, reference, idx, block_size=k))
        for k in (None, 1, 2, 7, 23, 100)
    ]
    np.testing.assert_allclose(values, values[0], rtol=1e-13)


def test_batch_score_embeddings_on_every_backend(xp):
    rng = np.random.default_rng(6)
    n, d, b = 48, 8, 20
    learner, reference = _models(rng, n, d, "learnability", 10.0, -5.0)
    idx = rng.permutation(n)[:b].astype(np.int64)
    expected = float(batch_score(oracle.dense_scores(learner, reference, "learnability"), idx))
    f32 = [
        PairEmbeddings(
            xp.from_numpy(m.image.astype(np.float32)),
            xp.from_numpy(m.text.astype(np.float32)),
            m.scale,
            m.bias,
        )
        for m in (learner, reference)
    ]
    got = batch_score_embeddings(*f32, xp.from_numpy(idx), block_size=7)
    assert is_zero_d(got, xp)
    # float32: rounding of the embeddings themselves (relative 2^-24 per coordinate) moves
    # each logit by about scale * d * eps32, each loss by at most as much.
    eps32 = float(np.finfo(np.float32).eps)
    magnitude = embedding_magnitude(learner, reference, "learnability")[np.ix_(idx, idx)]
    tol = 4 * (d + 2) * eps32 * float(magnitude.sum())
    assert abs(float(got) - expected) <= tol


def _exact_model_totals(models, idx) -> list[float]:
    """Each model's ``sum_{i, j in idx} l_ij`` in float64 from its (float32-rounded) embeddings."""
    totals = []
    for m in models:
        image, text = (np.asarray(x, dtype=np.float64)[idx] for x in m[:2])
        loss = oracle.pairwise_sigmoid_loss(image, text, float(m.scale), float(m.bias))
        totals.append(math.fsum(loss.ravel().tolist()))
    return totals


#: 320 orthonormal rows of dimension 320.
ORTHONORMAL = np.linalg.qr(np.random.default_rng(12).standard_normal((320, 320)))[0]


def _trained_pairs(rng, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Float32 unit embeddings of a trained model: matching pairs aligned, others orthogonal.

    Images are ``n`` orthonormal rows (d = 320); each text is its image moved by ``noise``.
    """
    image = ORTHONORMAL[rng.permutation(320)[:n]]
    text = image + noise * rng.standard_normal((n, 320)) / np.sqrt(320)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return image.astype(np.float32), text.astype(np.float32)


#: Required accuracy of batch_score_embeddings in float32 (issue 12): 1e-4 relative, per model.
RTOL_EMBEDDINGS_F32 = 1e-4


def _assert_batch_score_embeddings_accurate(xp, learner, reference, idx, block_size=None):
    models = [m for m in (learner, reference) if m is not None]
    exact = _exact_model_totals(models, idx)
    signs = [1, -1] if len(models) == 2 else [1 if learner is not None else -1]
    expected = math.fsum(s * t for s, t in zip(signs, exact, strict=True))
    converted = [
        None if m is None else m._replace(image=xp.from_numpy(m.image), text=xp.from_numpy(m.text))
        for m in (learner, reference)
    ]
    score = {2: "learnability"}.get(len(models), "hard_learner" if learner else "easy_reference")
    got = batch_score_embeddings(*converted, xp.from_numpy(idx), score=score, block_size=block_size)
    assert is_zero_d(got, xp) and str(got.dtype).endswith("float32")
    # The models' totals are sums of positive losses, each to be right to RTOL: their signed sum
    # (learnability) to RTOL of the sum of their magnitudes.
    err = abs(float(xp.to_numpy(got)) - expected)
    assert err <= RTOL_EMBEDDINGS_F32 * sum(exact), (float(got), expected, err / sum(exact))


def test_batch_score_embeddings_float32_well_separated_pairs(xp):
    # Issue 12: 512 orthogonal pairs at scale 117, bias -12 (learner) vs -12.5 (reference), a
    # batch of 256. The diagonal used to be added as negative pairs (loss ~117 each) and then
    # subtracted, which left 0.168 against a true 0.158 (+6.4%).
    e = np.eye(512, dtype=np.float32)
    learner = PairEmbeddings(e, e, 117.0, -12.0)
    reference = PairEmbeddings(e, e, 117.0, -12.5)
    idx = np.arange(256)
    _assert_batch_score_embeddings_accurate(xp, learner, reference, idx)
    _assert_batch_score_embeddings_accurate(xp, learner, reference, idx, block_size=100)
    _assert_batch_score_embeddings_accurate(xp, learner, None, idx)


@settings(max_examples=12)
@given(
    n=st.integers(2, 300),
    scale=st.floats(1.0, 120.0),
    bias=st.floats(-16.0, 0.0),
    gap=st.floats(0.5, 3.0),
    noise=st.sampled_from([0.0, 0.1, 0.5]),
    seed=st.integers(0, 2**31),
    data=st.data(),
)
def test_batch_score_embeddings_float32_is_accurate_in_the_trained_regime(
    xp, n, scale, bias, gap, noise, seed, data
):
    rng = np.random.default_rng(seed)
    learner = PairEmbeddings(*_trained_pairs(rng, n, noise), scale, bias)
    reference = PairEmbeddings(*_trained_pairs(rng, n, noise), scale, bias - gap)
    b = data.draw(st.integers(1, n), label="b")
    idx = rng.permutation(n)[:b]
    block_size = data.draw(st.one_of(st.none(), st.integers(1, b)), label="block_size")
    _assert_batch_score_embeddings_accurate(xp, learner, reference, idx, block_size)


def test_batch_score_embeddings_of_real_pairs_equals_the_learnability_matrix():
    batch = sq.hard_negative_superbatch(120, seed=3)
    s = sq.score_matrix(batch)
    idx = np.random.default_rng(0).permutation(120)[:40]
    a = float(batch_score_embeddings(batch.learner, batch.reference, idx))
    assert a == pytest.approx(float(batch_score(s, idx)), rel=1e-12, abs=1e-12)


# ----------------------------------------------------------------------------- bad inputs


S4 = np.arange(16.0).reshape(4, 4)


@pytest.mark.parametrize(
    ("indices", "error", "match"),
    [
        (np.array([0, 2, 0]), ValueError, "indices must be distinct"),
        (np.array([0, 4]), ValueError, r"indices must lie in \[0, 4\)"),
        (np.array([-1, 2]), ValueError, r"indices must lie in \[0, 4\)"),
        (np.array([0.0, 1.0]), TypeError, "indices must be an integer array"),
        (np.array([True, False]), TypeError, "indices must be an integer array"),
        (np.array([[0, 1]]), ValueError, "indices must be a non-empty 1-D array"),
        (np.array(1), ValueError, "indices must be a non-empty 1-D array"),
        (np.array([], dtype=np.int64), ValueError, "indices must be a non-empty 1-D array"),
        ([0, 1], TypeError, "scores, indices must be arrays"),
    ],
)
def test_batch_score_refuses_bad_indices(indices, error, match):
    with pytest.raises(error, match=match):
        batch_score(S4, indices)
    learner = PairEmbeddings(np.eye(4), np.eye(4), 1.0, 0.0)
    if isinstance(indices, np.ndarray):
        with pytest.raises(error, match=match):
            batch_score_embeddings(learner, None, indices, score="hard_learner")


@pytest.mark.parametrize(
    ("scores", "error", "match"),
    [
        (np.arange(16).reshape(4, 4), TypeError, "scores must have a real floating dtype"),
        (np.zeros((4, 3)), ValueError, r"scores must be a square \(N, N\) matrix"),
        (np.zeros(4), ValueError, "scores must be 2-D"),
        (np.zeros((2, 2, 2)), ValueError, "scores must be 2-D"),
    ],
)
def test_batch_score_refuses_bad_scores(scores, error, match):
    with pytest.raises(error, match=match):
        batch_score(scores, np.array([0, 1]))


def test_batch_score_refuses_mixed_namespaces():
    import torch

    with pytest.raises(TypeError, match="scores, indices must be arrays of one array-API"):
        batch_score(S4, torch.tensor([0, 1]))


def test_batch_score_embeddings_refuses_bad_options():
    m = PairEmbeddings(np.eye(4), np.eye(4), 1.0, 0.0)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        batch_score_embeddings(m, m, np.array([0, 1]), block_size=0)
    with pytest.raises(ValueError, match="score must be one of"):
        batch_score_embeddings(m, m, np.array([0, 1]), score="loss")
    with pytest.raises(ValueError, match="needs reference embeddings"):
        batch_score_embeddings(m, None, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\)"):
        batch_score_embeddings(m, m, np.array([1, 9]))


# ----------------------------------------------------------------------------- the optimum


@st.composite
def small_problem(draw):
    """A score matrix from embeddings or plain normal noise (not symmetric), and b."""
    n = draw(st.integers(2, 9))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        learner, reference = _models(rng, n, 4, "learnability", 10.0, -5.0)
        s = oracle.dense_scores(learner, reference, "learnability")
    else:
        s = rng.normal(size=(n, n)) + draw(st.sampled_from([-1.0, 0.0, 1.0]))
    return s, draw(st.integers(1, n)), seed


@given(small_problem())
def test_exhaustive_best_matches_itertools(problem):
    s, b, _ = problem
    best, idx = sq.exhaustive_best(s, b)
    assert idx.shape == (b,) and len(set(idx.tolist())) == b
    assert best == pytest.approx(literal_best(s, b), rel=1e-12, abs=1e-12)
    assert best == pytest.approx(literal_batch_score(s, idx), rel=1e-12, abs=1e-12)


@given(small_problem())
def test_exact_optimum_bounds_every_method_and_is_bounded_above(problem):
    s, b, seed = problem
    best, _ = sq.exhaustive_best(s, b)
    tol = 1e-12 * (1.0 + float(np.abs(s).sum()))
    chosen = sq.select_all(s, b, sq.N_CHUNKS, seed % 2**32)
    assert {"uniform", "independent (sampled)", "independent (top-k)"} <= set(chosen)
    assert f"joint (sampled) c={b}" in chosen and f"joint (greedy) c={b}" in chosen
    for name, idx in chosen.items():
        assert len(set(np.asarray(idx).tolist())) == b, name
        assert float(batch_score(s, idx)) <= best + tol, name
    assert sq.uniform_expectation(s, b) <= best + tol
    assert sq.upper_bound(s, b) >= best - tol
    search = sq.local_search(
        s, b, [np.asarray(x) for x in chosen.values()], random_starts=2, iters=3, seed=seed
    )
    assert search.score <= best + tol
    assert all(search.score >= float(batch_score(s, x)) - tol for x in chosen.values())


@given(small_problem())
def test_uniform_expectation_is_the_mean_over_all_subsets(problem):
    s, b, _ = problem
    n = s.shape[0]
    mean = np.mean([literal_batch_score(s, c) for c in itertools.combinations(range(n), b)])
    assert sq.uniform_expectation(s, b) == pytest.approx(mean, rel=1e-10, abs=1e-10)


@given(small_problem())
def test_swap_descent_ends_where_no_single_swap_helps(problem):
    s, b, seed = problem
    n = s.shape[0]
    start = np.random.default_rng(seed).permutation(n)[:b]
    end = sq.swap_descent(s, start)
    assert sorted(set(end.tolist())) == sorted(end.tolist()) and len(end) == b
    score = literal_batch_score(s, end)
    tol = 1e-9 * (1.0 + float(np.abs(s).sum()))
    assert score >= literal_batch_score(s, start) - tol
    for a in range(b):
        for m in sorted(set(range(n)) - set(end.tolist())):
            swapped = end.copy()
            swapped[a] = m
            assert literal_batch_score(s, swapped) <= score + tol


def test_local_search_finds_a_planted_dense_block():
    # Off-diagonal +1 inside a hidden block of 12 and -0.2 elsewhere, diagonal noise that points
    # away from it: greedy selection by the diagonal misses it, the search must find it.
    rng = np.random.default_rng(7)
    n, b = 200, 12
    block = rng.permutation(n)[:b]
    s = np.full((n, n), -0.2)
    s[np.ix_(block, block)] = 1.0
    np.fill_diagonal(s, rng.uniform(0.0, 3.0, size=n))
    s[block, block] = 0.0
    start = [np.asarray(jestcore.independent_select(np.diag(s).copy(), b, greedy=True))]
    found = sq.local_search(s, b, start, random_starts=8, iters=100, seed=0)
    assert sorted(found.indices.tolist()) == sorted(block.tolist())
    assert found.score == pytest.approx(b * (b - 1) * 1.0)


# ----------------------------------------------------------------------------- the generator


def test_hard_negative_superbatch_plants_what_it_documents():
    batch = sq.hard_negative_superbatch(900, seed=0)
    s = sq.score_matrix(batch)
    kind = batch.kind
    diag = np.diag(s)
    assert set(np.unique(kind)) == {"learnt", "hard", "unlearnt", "mismatched"}
    # unlearnt pairs are learnable alone; learnt and mismatched ones are not
    assert diag[kind == "unlearnt"].mean() > 1.0
    assert abs(diag[kind == "learnt"].mean()) < 0.05
    assert abs(diag[kind == "mismatched"].mean()) < 0.3
    assert diag[kind == "hard"].mean() < 0.5 * diag[kind == "unlearnt"].mean()
    # cluster mates: hard negatives of each other in hard clusters, costly in unlearnt ones
    mates = (batch.cluster[:, None] == batch.cluster[None, :]) & ~np.eye(len(kind), dtype=bool)
    for name, low, high in (("hard", 1.0, 3.0), ("unlearnt", -0.6, -0.1), ("learnt", -0.05, 0.05)):
        both = mates & (kind == name)[:, None] & (kind == name)[None, :]
        assert low < s[both].mean() < high, (name, s[both].mean())
    assert abs(s[~mates].mean()) < 0.01
    # within hard clusters, the pairs are learnable jointly: the best batch is mostly hard pairs
    b = 60
    found = sq.local_search(s, b, [], random_starts=4, iters=20, seed=0)
    assert np.mean(kind[found.indices] == "hard") > 0.6
    top = np.asarray(jestcore.independent_select(diag.copy(), b, greedy=True))
    assert np.mean(kind[top] == "hard") < 0.2


def test_generator_and_loader_refuse_bad_input(tmp_path):
    with pytest.raises(ValueError, match="p_hard, p_unlearnt"):
        sq.hard_negative_superbatch(10, p_hard=0.8, p_unlearnt=0.5)
    path = tmp_path / "e.npz"
    np.savez(path, learner_image=np.zeros((3, 2)), learner_text=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="missing arrays"):
        sq.load_embeddings(path)


# ----------------------------------------------------------------------------- the script


def _check_result(result: dict, sources: set[str]) -> None:
    assert {r["data"] for r in result["results"]} == sources
    for case in result["cases"]:
        for run in case["runs"]:
            best = run["best"]
            tol = 1e-9 * (1.0 + abs(best))
            assert all(v <= best + tol for v in run["scores"].values())
            assert run["upper_bound"] >= best - tol
            assert run["local_search"]["score"] >= max(run["scores"].values()) - tol
            if case["exact"]:
                assert run["exact"]["score"] >= run["local_search"]["score"] - tol
    records = result["results"]
    assert all(r["normalised"] == 1.0 for r in records if r["method"] == "best")
    joint = [r for r in records if r["method"] == "joint (sampled)"]
    assert {r["n_chunks"] for r in joint} >= {1, 2}


@pytest.mark.slow
def test_quick_run_writes_json_and_plot(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(BENCH), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "joint (sampled) c=16" in proc.stdout and "upper bound" in proc.stdout
    result = json.loads((tmp_path / "selection_quality.json").read_text())
    _check_result(result, {"synthetic"})
    assert result["config"]["quick"] is True and "cost" in result
    assert (tmp_path / "selection_quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_embeddings_option_runs_on_a_pool(tmp_path):
    pool = sq.hard_negative_superbatch(300, seed=11)
    path = tmp_path / "pool.npz"
    arrays = {}
    for name, m in (("learner", pool.learner), ("reference", pool.reference)):
        arrays |= {
            f"{name}_image": m.image,
            f"{name}_text": m.text,
            f"{name}_scale": np.asarray(m.scale),
            f"{name}_bias": np.asarray(m.bias),
        }
    np.savez(path, **arrays)
    out = tmp_path / "out"
    argv = ["--quick", "--seeds", "1", "--filter-ratios", "0.5", "0.8", "--no-cost"]
    assert sq.main([*argv, "--embeddings", str(path), "--out", str(out)]) == 0
    result = json.loads((out / "selection_quality.json").read_text())
    _check_result(result, {"synthetic", "embeddings pool.npz"})
    assert (out / "selection_quality.png").is_file()
    with pytest.raises(ValueError, match="needs a pool of at least N pairs"):
        sq.pool_superbatch(sq.load_embeddings(path), 301, seed=0)
