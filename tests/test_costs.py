"""Compute accounting: hand-computed FLOPs, a literal chunk-loop oracle, curves to target."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jestcore.adapters.demo import costs as C

import jestcore

E = C.AFFINE_FLOPS + C.SOFTPLUS_FLOPS  # 8: scale * x + bias, then softplus


def test_mlp_flops_by_hand() -> None:
    assert C.mlp_flops([64, 512, 32]) == 2 * 64 * 512 + 2 * 512 * 32 == 98304
    assert C.mlp_flops([3, 4]) == 24
    assert C.mlp_flops((16, 512, 32)) == 2 * 16 * 512 + 2 * 512 * 32
    assert C.mlp_flops([np.int64(2), 5, 1]) == 20 + 10


@pytest.mark.parametrize(
    ("sizes", "error", "match"),
    [
        ([5], ValueError, "at least"),
        ([], ValueError, "at least"),
        ([0, 3], ValueError, r"layer_sizes\[0\]"),
        ([4, 2.5], TypeError, r"layer_sizes\[1\]"),
        ([4, True], TypeError, r"layer_sizes\[1\]"),
        ("ab", TypeError, "sequence"),
        (7, TypeError, "sequence"),
    ],
)
def test_mlp_flops_errors(sizes, error, match) -> None:
    with pytest.raises(error, match=match):
        C.mlp_flops(sizes)


def test_super_batch_size() -> None:
    assert C.super_batch_size(64, 0.8) == 320
    assert C.super_batch_size(64, 0.0) == 64
    assert C.super_batch_size(64, 0.5) == 128
    assert C.super_batch_size(10, 0.75) == 40
    assert C.super_batch_size(3, 0.5) == 6
    assert C.super_batch_size(1, 0.01) == 1


@pytest.mark.parametrize(
    ("b", "f", "error", "match"),
    [
        (64, 1.0, ValueError, "filter_ratio"),
        (64, -0.1, ValueError, "filter_ratio"),
        (64, math.nan, ValueError, "filter_ratio"),
        (64, "0.8", TypeError, "filter_ratio"),
        (0, 0.8, ValueError, "batch_size"),
        (True, 0.8, TypeError, "batch_size"),
        (64.0, 0.8, TypeError, "batch_size"),
    ],
)
def test_super_batch_size_errors(b, f, error, match) -> None:
    with pytest.raises(error, match=match):
        C.super_batch_size(b, f)


def test_selection_flops_by_hand() -> None:
    # N = 4, b = 2 in 2 chunks of 1: one row updates the logits (none after the last chunk).
    # One model of width 1: diagonal 4 * (2 + 8) = 40; products 4 * 1 * 1 * 4 = 16;
    # loss + column sums of 2 * 1 * 4 entries at 9 FLOPs = 72; Gumbel noise 2 * 4 = 8.
    one = {"learner_dim": 1, "reference_dim": None, "n_chunks": 2}
    assert C.selection_flops(4, 2, **one) == 40 + 16 + 72 + 8
    # The matrix: 16 entries at 2 + 8; row and column sums of the one row: 2 * 1 * 4; noise 8.
    assert C.selection_flops(4, 2, selection="joint_matrix", **one) == 160 + 8 + 8
    assert C.selection_flops(4, 2, selection="independent_diagonal", **one) == 40 + 4
    assert C.selection_flops(4, 2, selection="independent_matrix", **one) == 160 + 32 + 4
    # Two models, widths 1 and 2: (40 + 16 + 72) + (4 * 12 + 4 * 2 * 4 + 72) + combine 4 + 8.
    two = {"learner_dim": 1, "reference_dim": 2, "n_chunks": 2}
    assert C.selection_flops(4, 2, **two) == 128 + 152 + 4 + 8
    # Only the reference (easy_reference) is the one-model count at its width.
    ref = {"learner_dim": None, "reference_dim": 2, "n_chunks": 2}
    assert C.selection_flops(4, 2, **ref) == 152 + 8


def test_selection_flops_demo_numbers() -> None:
    # The demo: N = 320, b = 64, 16 chunks of 4, d = 32, learnability. R = 60 rows update.
    per_model = 320 * (64 + 8) + 4 * 60 * 32 * 320 + 2 * 60 * 320 * 9
    expected = 2 * per_model + 320 + 16 * 320
    assert C.selection_flops(320, 64, learner_dim=32, reference_dim=32) == expected
    # Streaming is cheaper than forming the matrices, and the gap grows with N.
    kw = {"learner_dim": 32, "reference_dim": 32}
    ratios = [
        C.selection_flops(n, 64, selection="joint_matrix", **kw) / C.selection_flops(n, 64, **kw)
        for n in (320, 1280, 5120)
    ]
    assert 1 < ratios[0] < ratios[1] < ratios[2]


def streaming_oracle(n: int, b: int, dims: list[int], n_chunks: int) -> int:
    """Literal chunk loop over jestcore.chunk_sizes, counting what each step computes."""
    sizes = jestcore.chunk_sizes(b, n_chunks)
    flops = 0
    for d in dims:
        flops += n * 2 * d  # row-wise dot products: d multiply-adds each
        flops += n * (C.AFFINE_FLOPS + C.SOFTPLUS_FLOPS)  # the diagonal losses
    flops += (len(dims) - 1) * n  # add the models' diagonals
    for k, c in enumerate(sizes):
        flops += n  # perturb the logits with this chunk's noise row
        if k == len(sizes) - 1:
            break  # no update after the last chunk
        for d in dims:
            for _ in range(2):  # image_C @ text.T and text_C @ image.T
                flops += 2 * c * d * n  # the (c x d)(d x N) product
                flops += c * n * (C.AFFINE_FLOPS + C.SOFTPLUS_FLOPS)  # losses
                flops += c * n  # column sums into the logits
    return flops


@given(
    n=st.integers(1, 300),
    data=st.data(),
    dims=st.lists(st.integers(1, 64), min_size=1, max_size=2),
)
def test_selection_flops_matches_chunk_loop(n: int, data: st.DataObject, dims: list[int]) -> None:
    b = data.draw(st.integers(1, n))
    chunks = data.draw(st.integers(1, b))
    learner, reference = [*dims, None][:2]
    got = C.selection_flops(n, b, learner_dim=learner, reference_dim=reference, n_chunks=chunks)
    assert got == streaming_oracle(n, b, dims, chunks)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_super": 0}, ValueError, "n_super"),
        ({"n_select": 11}, ValueError, "n_select"),
        ({"n_select": 0}, ValueError, "n_select"),
        ({"selection": "greedy"}, ValueError, "selection"),
        ({"learner_dim": None, "reference_dim": None}, ValueError, "learner_dim"),
        ({"learner_dim": 0}, ValueError, "learner_dim"),
        ({"reference_dim": 2.0}, TypeError, "reference_dim"),
        ({"n_chunks": 6}, ValueError, "n_chunks"),
        ({"n_chunks": 0}, ValueError, "n_chunks"),
    ],
)
def test_selection_flops_errors(kwargs, error, match) -> None:
    args = {"n_super": 10, "n_select": 5, "learner_dim": 4, "reference_dim": 4, **kwargs}
    with pytest.raises(error, match=match):
        C.selection_flops(args.pop("n_super"), args.pop("n_select"), **args)


def test_independent_ignores_n_chunks() -> None:
    kw = {"learner_dim": 4, "reference_dim": 4, "selection": "independent_diagonal"}
    assert C.selection_flops(10, 5, n_chunks=99, **kw) == C.selection_flops(10, 5, **kw)


F = 1000.0  # learner forward FLOPs per example at training resolution
KW = {"batch_size": 64, "train_flops": F, "embed_dim": 32}


def test_step_flops_uniform() -> None:
    cost = C.step_flops(score=None, **KW)
    assert cost == C.StepFlops(64, 0.0, 0.0, 0.0, 3 * 64 * F)
    assert cost.scoring == 0.0 and cost.total == 3 * 64 * F


def test_step_flops_learnability() -> None:
    sel = C.selection_flops(320, 64, learner_dim=32, reference_dim=32)
    cached = C.step_flops(**KW)
    assert cached.super_batch == 320
    assert cached.learner_scoring == 320 * F
    assert cached.reference_scoring == 0.0
    assert cached.selection == sel
    assert cached.training == 2 * 64 * F  # the scoring forward of the selected 64 is re-used
    assert cached.scoring == 320 * F + sel
    assert cached.total == 320 * F + sel + 2 * 64 * F
    no_reuse = C.step_flops(reuse_scoring_forward=False, **KW)  # the old accounting
    assert no_reuse.training == 3 * 64 * F and no_reuse.scoring == cached.scoring
    live = C.step_flops(reference_flops=500.0, reference_cached=False, **KW)
    assert live.reference_scoring == 320 * 500.0
    assert live.total == cached.total + 320 * 500.0
    d = live.as_dict()
    assert d["total"] == live.total and d["scoring"] == live.scoring and d["super_batch"] == 320


def test_step_flops_other_scores() -> None:
    hard = C.step_flops(score="hard_learner", reference_flops=500.0, reference_cached=False, **KW)
    assert hard.reference_scoring == 0.0 and hard.learner_scoring == 320 * F
    assert hard.selection == C.selection_flops(320, 64, learner_dim=32, reference_dim=None)
    assert hard.training == 2 * 64 * F
    easy = C.step_flops(score="easy_reference", reference_flops=500.0, reference_cached=False, **KW)
    assert easy.learner_scoring == 0.0 and easy.reference_scoring == 320 * 500.0
    assert easy.training == 3 * 64 * F  # no learner forward to re-use
    easy = C.step_flops(
        score="easy_reference", batch_size=64, train_flops=F, reference_dim=16, embed_dim=None
    )
    assert easy.selection == C.selection_flops(320, 64, learner_dim=None, reference_dim=16)
    indep = C.step_flops(selection="independent_diagonal", **KW)
    assert indep.selection == C.selection_flops(
        320, 64, learner_dim=32, reference_dim=32, selection="independent_diagonal"
    )
    assert indep.selection < C.step_flops(**KW).selection
    # Low-resolution scoring: cheaper learner scoring, nothing to re-use.
    low = C.step_flops(score_flops=F / 4, **KW)
    assert low.learner_scoring == 320 * F / 4 and low.training == 3 * 64 * F
    # Flexi co-training: half the batch at each resolution.
    flexi = C.step_flops(score_flops=F / 4, co_training=0.5, **KW)
    assert flexi.training == 3 * 32 * F + 3 * 32 * F / 4
    half = C.step_flops(filter_ratio=0.5, **KW)
    assert half.super_batch == 128 and half.learner_scoring == 128 * F


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"score": "learnable"}, ValueError, "score"),
        ({"selection": "joint"}, ValueError, "selection"),
        ({"embed_dim": None}, ValueError, "embed_dim"),
        ({"train_flops": -1.0}, ValueError, "train_flops"),
        ({"train_flops": math.inf}, ValueError, "train_flops"),
        ({"score_flops": "x"}, TypeError, "score_flops"),
        ({"reference_flops": -2}, ValueError, "reference_flops"),
        ({"reference_cached": 1}, TypeError, "reference_cached"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"filter_ratio": 1.5}, ValueError, "filter_ratio"),
        ({"filter_ratio": 1.5, "score": None}, ValueError, "filter_ratio"),
        ({"n_chunks": 65}, ValueError, "n_chunks"),
        ({"co_training": 1.0}, ValueError, "co_training"),
        ({"co_training": "half"}, TypeError, "co_training"),
        ({"reuse_scoring_forward": 1}, TypeError, "reuse_scoring_forward"),
        ({"reuse_scoring_forward": True, "score_flops": 10.0}, ValueError, "reuse"),
        ({"reuse_scoring_forward": True, "score": "easy_reference"}, ValueError, "reuse"),
        ({"reuse_scoring_forward": True, "score": None}, ValueError, "uniform"),
        ({"co_training": 0.5, "score": None}, ValueError, "uniform"),
    ],
)
def test_step_flops_errors(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        C.step_flops(**{**KW, **kwargs})


# The paper's settings (arXiv 2406.17711, A.4): b = 32k, f = 0.8 (N = 5b), a ViT-sized F.
PAPER = {"batch_size": 32_768, "train_flops": 40e9, "embed_dim": 768}


def _over_uniform(cost: C.StepFlops) -> float:
    """Per-step cost without selection arithmetic (the paper's formulas leave it out) / uniform."""
    uniform = C.step_flops(score=None, **PAPER)
    return (cost.total - cost.selection) / uniform.total


def test_step_flops_paper_jest_formula() -> None:
    # C = F (2 + N/b): score N at F, train b at 3F re-using their forward; uniform is 3F.
    cached = C.step_flops(**PAPER)
    assert _over_uniform(cached) == pytest.approx((2 + 5) / 3, rel=1e-12)
    assert round(_over_uniform(cached), 2) == 2.33
    # Without cached reference embeddings the reference scores N at F too: 4x.
    live = C.step_flops(reference_cached=False, reference_flops=PAPER["train_flops"], **PAPER)
    assert _over_uniform(live) == pytest.approx(4.0, rel=1e-12)
    # Selection arithmetic is small at the paper's scale, but counted.
    assert 0 < cached.selection / cached.total < 0.01


@pytest.mark.parametrize("a", [0.25, 0.28])
def test_step_flops_paper_flexi_formula(a: float) -> None:
    # C = 3F (0.5 + 0.5 A) + A F N/b: 1.04x (A = 0.25) to 1.10x (A = 0.28) of uniform.
    f = PAPER["train_flops"]
    flexi = C.step_flops(score_flops=a * f, co_training=0.5, **PAPER)
    expected = (3 * (0.5 + 0.5 * a) + a * 5) / 3
    assert _over_uniform(flexi) == pytest.approx(expected, rel=1e-12)
    assert 1.04 <= round(_over_uniform(flexi), 2) <= 1.11


def test_cumulative_flops() -> None:
    np.testing.assert_array_equal(C.cumulative_flops([0, 10, 20], 5.0, offset=1.0), [1, 51, 101])
    cost = C.step_flops(score=None, **KW)
    got = C.cumulative_flops(np.array([1, 3]), cost)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [cost.total, 3 * cost.total])
    with pytest.raises(TypeError, match="steps"):
        C.cumulative_flops([0.5, 1.0], 5.0)
    with pytest.raises(ValueError, match="steps"):
        C.cumulative_flops([-1, 1], 5.0)
    with pytest.raises(ValueError, match="offset"):
        C.cumulative_flops([1], 5.0, offset=-1.0)
    with pytest.raises(ValueError, match="flops_per_step"):
        C.cumulative_flops([1], math.nan)


def test_smooth_by_hand() -> None:
    np.testing.assert_allclose(C.smooth([0.0, 3.0, 6.0, 3.0]), [1.5, 3.0, 4.0, 4.5])
    np.testing.assert_array_equal(C.smooth([1, 5, 2], window=1), [1.0, 5.0, 2.0])
    np.testing.assert_allclose(C.smooth([1.0, 2.0, 3.0, 4.0, 5.0], window=5), [2, 2.5, 3, 3.5, 4])
    np.testing.assert_array_equal(C.smooth([7.0]), [7.0])


@given(
    values=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=30),
    half=st.integers(0, 5),
)
def test_smooth_matches_literal_mean(values: list[float], half: int) -> None:
    n = len(values)
    expected = [np.mean(values[max(0, i - half) : i + half + 1]) for i in range(n)]
    np.testing.assert_allclose(C.smooth(values, 2 * half + 1), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("values", "window", "error", "match"),
    [
        ([1.0, 2.0], 2, ValueError, "odd"),
        ([1.0, 2.0], 0, ValueError, "window"),
        ([1.0, 2.0], 3.0, TypeError, "window"),
        ([], 3, ValueError, "non-empty"),
        ([[1.0, 2.0]], 3, ValueError, "1-D"),
        ([1.0, math.nan], 3, ValueError, "finite"),
        (["a", "b"], 3, TypeError, "real numbers"),
        ([True, False], 3, TypeError, "real numbers"),
    ],
)
def test_smooth_errors(values, window, error, match) -> None:
    with pytest.raises(error, match=match):
        C.smooth(values, window)


def saturating(steps: np.ndarray, tau: float, top: float = 0.95) -> np.ndarray:
    return top * (1.0 - np.exp(-steps / tau))


def test_steps_to_target_on_exact_curves() -> None:
    steps = np.arange(50, 1501, 50)
    fast, slow = saturating(steps, 100.0), saturating(steps, 400.0)
    target = float(slow[-1])
    # Without smoothing: the first evaluation at or after the analytic crossing.
    crossing = -100.0 * math.log(1.0 - target / 0.95)
    expected = int(steps[np.argmax(steps >= crossing)])
    assert C.steps_to_target(steps, fast, target, window=1) == expected
    assert C.steps_to_target(steps, slow, target, window=1) == 1500
    # A curve reaches a target equal to one of its values at that value (>=).
    assert C.steps_to_target(steps, slow, float(slow[10]), window=1) == int(steps[10])
    # Never reached: None.
    assert C.steps_to_target(steps, fast, 0.99) is None
    assert C.flops_to_target(steps, fast, 0.99, 1e6) is None
    # Smoothing delays a rising curve by at most one evaluation here.
    smoothed = C.steps_to_target(steps, fast, target)
    assert smoothed is not None and expected <= smoothed <= expected + 50


def test_smoothing_ignores_a_lucky_evaluation() -> None:
    steps = np.arange(100, 1100, 100)
    values = np.array([0.5, 0.9, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.9, 0.9])
    assert C.steps_to_target(steps, values, 0.88, window=1) == 200
    assert C.steps_to_target(steps, values, 0.88) == 800


@given(values=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40), half=st.integers(0, 3))
def test_a_curve_reaches_its_own_final_value(values: list[float], half: int) -> None:
    steps = np.arange(len(values)) * 10
    target = C.final_value(values, window=2 * half + 1)
    step = C.steps_to_target(steps, values, target, window=2 * half + 1)
    assert step is not None and step <= steps[-1]


def test_flops_to_target() -> None:
    steps = np.arange(50, 1501, 50)
    fast = saturating(steps, 100.0)
    target = float(saturating(steps, 400.0)[-1])
    step = C.steps_to_target(steps, fast, target)
    assert step is not None
    cost = C.step_flops(**KW)
    assert C.flops_to_target(steps, fast, target, cost) == step * cost.total
    assert C.flops_to_target(steps, fast, target, 10.0, offset=7.0) == 7.0 + 10.0 * step


def test_final_value() -> None:
    assert C.final_value([0.1, 0.5, 0.8, 0.9]) == pytest.approx(0.85, rel=1e-12)
    assert C.final_value([0.1, 0.5, 0.8, 0.9], window=1) == 0.9


@pytest.mark.parametrize(
    ("steps", "values", "target", "error", "match"),
    [
        ([1, 2], [0.5], 0.5, ValueError, "same length"),
        ([2, 1], [0.5, 0.6], 0.5, ValueError, "increasing"),
        ([1, 1], [0.5, 0.6], 0.5, ValueError, "increasing"),
        ([1.0, 2.0], [0.5, 0.6], 0.5, TypeError, "steps"),
        ([[1, 2]], [0.5, 0.6], 0.5, ValueError, "steps"),
        ([1, 2], [0.5, 0.6], math.nan, ValueError, "target"),
        ([1, 2], [0.5, 0.6], True, TypeError, "target"),
        ([1, 2], [0.5, 0.6], "0.5", TypeError, "target"),
        ([], [], 0.5, ValueError, "non-empty"),
    ],
)
def test_steps_to_target_errors(steps, values, target, error, match) -> None:
    with pytest.raises(error, match=match):
        C.steps_to_target(steps, values, target)


def test_flops_to_target_errors() -> None:
    with pytest.raises(ValueError, match="flops_per_step"):
        C.flops_to_target([1, 2], [0.5, 0.6], 0.5, -1.0)
    with pytest.raises(TypeError, match="flops_per_step"):
        C.flops_to_target([1, 2], [0.5, 0.6], 0.5, "1e9")
    with pytest.raises(ValueError, match="offset"):
        C.flops_to_target([1, 2], [0.5, 0.6], 0.5, 1.0, offset=math.inf)
