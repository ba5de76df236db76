"""Bad input to every public function: a clear ValueError/TypeError naming the argument."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jestcore import (
    PairEmbeddings,
    batch_score,
    batch_score_embeddings,
    chunk_sizes,
    easy_reference,
    fold_in,
    gumbel_noise,
    hard_learner,
    independent_select,
    joint_select,
    joint_select_embeddings,
    learnability,
    sigmoid_loss_matrix,
    uniform,
)

#: The dtype-fit tolerance of float32 results, 4 * sqrt(eps).
RTOL32 = 4 * float(np.finfo(np.float32).eps) ** 0.5

S = np.random.default_rng(0).standard_normal((6, 6))
V = np.random.default_rng(1).standard_normal(6)


def emb(n: int = 6, d: int = 3, seed: int = 0, **changes) -> PairEmbeddings:
    rng = np.random.default_rng(seed)
    m = PairEmbeddings(rng.standard_normal((n, d)), rng.standard_normal((n, d)), 10.0, -1.0)
    return m._replace(**changes)


def with_value(x: np.ndarray, index: tuple, value: float) -> np.ndarray:
    x = x.copy()
    x[index] = value
    return x


# ---------------------------------------------------------------------------- joint_select

JOINT_CASES = [
    # (kwargs for joint_select, error, regex the message must match)
    ({"scores": V}, ValueError, r"scores must be 2-D"),
    ({"scores": np.zeros((2, 3, 3))}, ValueError, r"scores must be 2-D"),
    ({"scores": np.zeros((3, 4))}, ValueError, r"scores must be a square"),
    ({"scores": S.tolist()}, TypeError, r"scores"),
    ({"scores": S.astype(np.int64)}, TypeError, r"scores must have a real floating dtype"),
    ({"scores": S > 0}, TypeError, r"scores must have a real floating dtype"),
    ({"scores": S.astype(np.complex128)}, TypeError, r"scores must have a real floating dtype"),
    ({"n_select": 0}, ValueError, r"n_select must be between 1 and N = 6, got 0"),
    ({"n_select": 7}, ValueError, r"n_select must be between 1 and N = 6, got 7"),
    ({"n_select": True}, TypeError, r"n_select must be an int"),
    ({"n_select": 2.0}, TypeError, r"n_select must be an int"),
    ({"n_select": "2"}, TypeError, r"n_select must be an int"),
    ({"n_chunks": 0}, ValueError, r"n_chunks must be between 1 and n_select"),
    ({"n_chunks": 5}, ValueError, r"n_chunks must be between 1 and n_select, got 5"),
    ({"n_chunks": True}, TypeError, r"n_chunks must be an int"),
    ({"n_chunks": 1.5}, TypeError, r"n_chunks must be an int"),
    ({"scores": with_value(S, (1, 2), np.nan)}, ValueError, r"scores\[1, 2\] is nan"),
    ({"scores": with_value(S, (0, 0), np.inf)}, ValueError, r"scores\[0, 0\] is inf"),
    ({"scores": with_value(S, (5, 3), -np.inf)}, ValueError, r"scores\[5, 3\] is -inf"),
    (
        {"seed": None, "noise": with_value(np.zeros((2, 6)), (1, 4), np.nan)},
        ValueError,
        r"noise\[1, 4\] is nan",
    ),
    ({"seed": None}, ValueError, r"exactly one source of randomness.*got none"),
    ({"noise": np.zeros((2, 6))}, ValueError, r"exactly one source.*got seed, noise"),
    ({"greedy": True}, ValueError, r"exactly one source.*got seed, greedy=True"),
    ({"seed": None, "greedy": "yes"}, TypeError, r"greedy must be a bool"),
    ({"seed": None, "noise": np.zeros(6)}, ValueError, r"noise must have shape \(2, 6\)"),
    ({"seed": None, "noise": np.zeros((3, 6))}, ValueError, r"noise must have shape \(2, 6\)"),
    ({"seed": None, "noise": np.zeros((2, 6), np.int32)}, TypeError, r"noise must have a real"),
    ({"seed": -1}, ValueError, r"seed must be an int in \[0, 2\*\*32\)"),
    ({"seed": 2**32}, ValueError, r"seed must be an int in \[0, 2\*\*32\)"),
    ({"seed": 1.0}, TypeError, r"seed must be an int"),
    ({"seed": True}, TypeError, r"seed must be an int"),
    ({"seed": np.asarray([1, 2])}, TypeError, r"seed must be .* 0-d integer array"),
    ({"seed": np.asarray(1.0)}, TypeError, r"seed must be .* 0-d integer array"),
    ({"seed": None, "noise": torch.zeros(2, 6)}, TypeError, r"scores, noise must be arrays of one"),
    ({"seed": torch.tensor(3)}, TypeError, r"seed"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), JOINT_CASES)
def test_joint_select_bad_input(kwargs, error, match):
    args = {"scores": S, "n_select": 4, "n_chunks": 2, "seed": 0, **kwargs}
    scores = args.pop("scores")
    n_select = args.pop("n_select")
    with pytest.raises(error, match=match):
        joint_select(scores, n_select, **args)


def test_torch_scores_with_numpy_seed_or_noise():
    scores = torch.from_numpy(S)
    with pytest.raises(TypeError, match=r"scores, noise must be arrays of one"):
        joint_select(scores, 4, n_chunks=2, noise=np.zeros((2, 6)))
    with pytest.raises(TypeError, match=r"seed"):
        joint_select(scores, 4, n_chunks=2, seed=np.asarray(3))
    # a Python int seed works everywhere
    assert joint_select(scores, 4, n_chunks=2, seed=3).shape == (4,)


# ---------------------------------------------------------------------- independent_select

INDEPENDENT_CASES = [
    ({"scores": S}, ValueError, r"scores must be 1-D"),
    ({"scores": V.astype(np.int32)}, TypeError, r"scores must have a real floating dtype"),
    ({"n_select": 0}, ValueError, r"n_select must be between 1 and N = 6"),
    ({"n_select": 7}, ValueError, r"n_select must be between 1 and N = 6"),
    ({"n_select": False}, TypeError, r"n_select must be an int"),
    ({"scores": with_value(V, (3,), np.nan)}, ValueError, r"scores\[3\] is nan"),
    ({"seed": None, "noise": np.zeros((1, 6))}, ValueError, r"noise must have shape \(6,\)"),
    (
        {"seed": None, "noise": with_value(np.zeros(6), (2,), np.inf)},
        ValueError,
        r"noise\[2\] is inf",
    ),
    ({"seed": None}, ValueError, r"exactly one source of randomness"),
    ({"greedy": True}, ValueError, r"exactly one source of randomness"),
    ({"seed": 2**40}, ValueError, r"seed must be an int"),
    ({"seed": None, "noise": torch.zeros(6)}, TypeError, r"scores, noise must be arrays of one"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), INDEPENDENT_CASES)
def test_independent_select_bad_input(kwargs, error, match):
    args = {"scores": V, "n_select": 3, "seed": 0, **kwargs}
    scores = args.pop("scores")
    n_select = args.pop("n_select")
    with pytest.raises(error, match=match):
        independent_select(scores, n_select, **args)


# ---------------------------------------------------------------- joint_select_embeddings

EMB_CASES = [
    # (learner, reference, kwargs, error, match)
    (emb(), emb(), {"score": "learnabilty"}, ValueError, r"score must be one of"),
    (emb(), None, {}, ValueError, r'score="learnability" needs reference embeddings'),
    (None, emb(), {}, ValueError, r'score="learnability" needs learner embeddings'),
    (None, emb(), {"score": "hard_learner"}, ValueError, r"needs learner embeddings"),
    (emb(), None, {"score": "easy_reference"}, ValueError, r"needs reference embeddings"),
    ({"image": 1}, emb(), {}, TypeError, r"learner must be a PairEmbeddings"),
    (emb(), emb()[:3], {}, TypeError, r"reference must be a PairEmbeddings"),
    (emb(), emb(n=7), {}, ValueError, r"learner and reference must embed the same N"),
    (emb(text=np.zeros((6, 4))), emb(), {}, ValueError, r"learner.image and learner.text"),
    (emb(image=np.zeros(6)), emb(), {}, ValueError, r"learner.image must be 2-D"),
    (emb(), emb(text=np.zeros((6, 3), np.int64)), {}, TypeError, r"reference.text must have"),
    (
        emb(text=with_value(emb().text, (2, 1), np.nan)),
        emb(),
        {},
        ValueError,
        r"learner.text\[2, 1\] is nan",
    ),
    (
        emb(),
        emb(image=with_value(emb().image, (4, 0), -np.inf)),
        {},
        ValueError,
        r"reference.image\[4, 0\] is -inf",
    ),
    (emb(scale="10"), emb(), {}, TypeError, r"^learner\.scale must be a float or a 0-d floating"),
    (emb(scale=None), emb(), {}, TypeError, r"^learner\.scale must be a float"),
    (emb(scale=True), emb(), {}, TypeError, r"^learner\.scale must be a float"),
    (emb(), emb(scale=np.ones(1)), {}, TypeError, r"^reference\.scale must be a float or a 0-d"),
    (emb(), emb(bias=np.asarray(1)), {}, TypeError, r"^reference\.bias must be a float or a 0-d"),
    (emb(bias=[1.0]), emb(), {}, TypeError, r"^learner\.bias must be a float"),
    (emb(scale=math.nan), emb(), {}, ValueError, r"^learner\.scale must be finite"),
    (emb(), emb(bias=np.asarray(np.inf)), {}, ValueError, r"^reference\.bias must be finite"),
    (emb(), emb(), {"n_select": 0}, ValueError, r"n_select must be between 1 and N = 6"),
    (emb(), emb(), {"n_select": 2.5}, TypeError, r"n_select must be an int"),
    (emb(), emb(), {"n_chunks": 5}, ValueError, r"n_chunks must be between 1 and n_select"),
    (emb(), emb(), {"block_size": 0}, ValueError, r"block_size must be >= 1"),
    (emb(), emb(), {"block_size": 2.0}, TypeError, r"block_size must be an int"),
    (emb(), emb(), {"seed": None}, ValueError, r"exactly one source of randomness"),
    (emb(), emb(), {"greedy": True}, ValueError, r"exactly one source of randomness"),
    (emb(), emb(), {"seed": None, "noise": np.zeros(6)}, ValueError, r"noise must have shape"),
    (emb(), emb(), {"seed": -5}, ValueError, r"seed must be an int"),
    (
        emb(),
        emb(image=torch.zeros(6, 3, dtype=torch.float64)),
        {},
        TypeError,
        r"must be arrays of one array-API namespace",
    ),
    (
        emb(),
        emb(),
        {"seed": None, "noise": torch.zeros(2, 6)},
        TypeError,
        r"must be arrays of one array-API namespace",
    ),
]


@pytest.mark.parametrize(("learner", "reference", "kwargs", "error", "match"), EMB_CASES)
def test_joint_select_embeddings_bad_input(learner, reference, kwargs, error, match):
    args = {"n_select": 4, "n_chunks": 2, "seed": 0, **kwargs}
    n_select = args.pop("n_select")
    with pytest.raises(error, match=match):
        joint_select_embeddings(learner, reference, n_select, **args)


def test_unused_model_is_validated_if_given():
    # hard_learner does not use the reference: None is fine, a malformed one is refused
    got = joint_select_embeddings(emb(), None, 3, n_chunks=1, score="hard_learner", seed=0)
    assert got.shape == (3,)
    with pytest.raises(TypeError, match="reference must be a PairEmbeddings"):
        joint_select_embeddings(emb(), "unused", 3, n_chunks=1, score="hard_learner", seed=0)


# ------------------------------------------------------------------------------- scores


@pytest.mark.parametrize(
    ("image", "text", "scale", "bias", "error", "match"),
    [
        (np.zeros(3), np.zeros(3), 1.0, 0.0, ValueError, r"image must be 2-D"),
        (np.zeros((3, 2)), np.zeros((3, 2, 1)), 1.0, 0.0, ValueError, r"text must be 2-D"),
        (np.zeros((3, 2)), np.zeros((4, 2)), 1.0, 0.0, ValueError, r"same shape \(N, d\)"),
        (np.zeros((3, 2)), np.zeros((3, 2), int), 1.0, 0.0, TypeError, r"text must have a real"),
        (np.zeros((3, 2)), torch.zeros(3, 2), 1.0, 0.0, TypeError, r"image, text must be arrays"),
        ([[0.0]], [[0.0]], 1.0, 0.0, TypeError, r"image"),
        (np.zeros((3, 2)), np.zeros((3, 2)), "1", 0.0, TypeError, r"scale must be a float"),
        (np.zeros((3, 2)), np.zeros((3, 2)), 1.0, np.zeros(2), TypeError, r"bias must be a float"),
        (np.zeros((3, 2)), np.zeros((3, 2)), math.inf, 0.0, ValueError, r"scale must be finite"),
        (
            np.zeros((3, 2)),
            np.zeros((3, 2)),
            1.0,
            np.asarray(np.nan),
            ValueError,
            r"bias must be finite",
        ),
    ],
)
def test_sigmoid_loss_matrix_bad_input(image, text, scale, bias, error, match):
    with pytest.raises(error, match=match):
        sigmoid_loss_matrix(image, text, scale=scale, bias=bias)


def test_score_functions_bad_input():
    with pytest.raises(ValueError, match=r"learner_loss and reference_loss must have the same"):
        learnability(np.zeros((3, 3)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match=r"learner_loss must have a real floating dtype"):
        learnability(np.zeros(3, int), np.zeros(3))
    with pytest.raises(TypeError, match=r"reference_loss must have a real floating dtype"):
        learnability(np.zeros(3), np.zeros(3, bool))
    with pytest.raises(TypeError, match=r"learner_loss, reference_loss must be arrays of one"):
        learnability(np.zeros(3), torch.zeros(3))
    with pytest.raises(TypeError, match=r"learner_loss must have a real floating dtype"):
        hard_learner(np.zeros(3, np.int8))
    with pytest.raises(TypeError, match=r"reference_loss"):
        easy_reference([1.0, 2.0])


# --------------------------------------------------------------------------- chunk_sizes


@pytest.mark.parametrize(
    ("n_select", "n_chunks", "error", "match"),
    [
        (0, 1, ValueError, r"n_select must be >= 1"),
        (-3, 1, ValueError, r"n_select must be >= 1"),
        (4, 0, ValueError, r"n_chunks must be between 1 and n_select"),
        (4, 5, ValueError, r"n_chunks must be between 1 and n_select, got 5"),
        (True, 1, TypeError, r"n_select must be an int"),
        (4.0, 1, TypeError, r"n_select must be an int"),
        (4, None, TypeError, r"n_chunks must be an int"),
    ],
)
def test_chunk_sizes_bad_input(n_select, n_chunks, error, match):
    with pytest.raises(error, match=match):
        chunk_sizes(n_select, n_chunks)


# ------------------------------------------------------------------------------- random


def test_random_bad_input():
    with pytest.raises(ValueError, match=r"shape must be"):
        uniform(0, (2, 2, 2), xp=np)
    with pytest.raises(ValueError, match=r"shape must be"):
        gumbel_noise(0, (-1,), xp=np)
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*32\)"):
        gumbel_noise(-1, (3,), xp=np)
    with pytest.raises(TypeError, match=r"seed must be an int"):
        uniform(np.asarray([0]), (3,), xp=np)
    with pytest.raises(TypeError, match=r"data must be an int"):
        fold_in(0, True)
    with pytest.raises(TypeError, match=r"seed, data must be arrays of one"):
        fold_in(np.asarray(1), torch.tensor(2))


# --------------------------------------------------------------- numbers beyond float range


@pytest.mark.parametrize("field", ["scale", "bias"])
@pytest.mark.parametrize(
    "value", [2**1100, -(2**1100), 2**1024], ids=["2^1100", "-2^1100", "2^1024"]
)
def test_ints_beyond_float_range_are_refused_naming_the_argument(field, value):
    # int -> float conversion used to raise a raw OverflowError
    kwargs = {"scale": 1.0, "bias": 0.0, field: value}
    with pytest.raises(ValueError, match=rf"^{field} must be finite, got an int of \d+ bits"):
        sigmoid_loss_matrix(np.eye(3), np.eye(3), **kwargs)
    model = emb(**{field: value})
    with pytest.raises(ValueError, match=rf"^learner\.{field} must be finite"):
        joint_select_embeddings(model, None, 2, n_chunks=1, score="hard_learner", seed=0)
    with pytest.raises(ValueError, match=rf"^learner\.{field} must be finite"):
        batch_score_embeddings(model, None, np.arange(3), score="hard_learner")
    # the largest float-sized ints are still numbers
    kwargs[field] = 2**1023
    sigmoid_loss_matrix(np.zeros((3, 2)), np.zeros((3, 2)), **kwargs)


# ------------------------------------------------------------------- indices of batch scores


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
def test_torch_indices_of_any_integer_dtype_are_indices(dtype):
    # torch reads a uint8 index tensor as a mask: it used to fail inside index_select
    s = np.random.default_rng(2).standard_normal((300, 300)).astype(np.float32)
    idx = np.array([3, 250, 0, 17])
    expected = float(batch_score(s, idx))
    got = batch_score(torch.from_numpy(s), torch.from_numpy(idx).to(dtype))
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(expected, rel=RTOL32)
    model = PairEmbeddings(torch.eye(300)[:, :8], torch.eye(300)[:, :8], 10.0, -1.0)
    a = batch_score_embeddings(model, None, torch.from_numpy(idx).to(dtype), score="hard_learner")
    b = batch_score_embeddings(model, None, torch.from_numpy(idx), score="hard_learner")
    assert float(a) == pytest.approx(float(b), rel=RTOL32)


@pytest.mark.parametrize(
    "indices", [np.array([0, 300], np.uint16), np.array([0, 2**31 + 5], np.uint32)]
)
def test_unsigned_indices_out_of_range_are_refused_before_conversion(indices):
    s = np.zeros((300, 300), np.float32)
    for convert in (np.asarray, torch.from_numpy):
        with pytest.raises(ValueError, match=r"indices must lie in \[0, 300\)"):
            batch_score(convert(s), convert(indices))
    # a uint64 beyond 2**32 whose low bits are in range must not wrap into a valid index
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 300\)"):
        batch_score(s, np.array([0, 2**32 + 1], np.uint64))


def test_torch_bool_indices_are_refused():
    with pytest.raises(TypeError, match="indices must be an integer array"):
        batch_score(torch.zeros(3, 3), torch.tensor([True, False, True]))


# ------------------------------------------------------------------------- float16 overflow


def test_float16_batch_score_accumulates_in_float32():
    # 256 x 256 ones: 65,536 is past float16's largest finite value, 65,504
    import jax.numpy as jnp

    ones = np.ones((256, 256), np.float16)
    idx = np.arange(256)
    for convert in (np.asarray, torch.from_numpy, jnp.asarray):
        got = batch_score(convert(ones), convert(idx))
        assert str(got.dtype).endswith("float32")
        assert float(got) == 65536.0
    bf16 = batch_score(torch.ones(256, 256, dtype=torch.bfloat16), torch.arange(256))
    assert bf16.dtype == torch.float32 and float(bf16) == 65536.0


def test_float16_batch_score_embeddings_accumulates_in_float32():
    # zero embeddings, bias 2: every negative pair costs softplus(2), 65,280 of them ~ 138,850
    z = np.zeros((256, 4), np.float16)
    model = PairEmbeddings(z, z, 1.0, 2.0)
    got = batch_score_embeddings(model, None, np.arange(256), score="hard_learner")
    expected = 256 * 255 * np.log1p(np.exp(2.0)) + 256 * np.log1p(np.exp(-2.0))
    assert got.dtype == np.float32
    assert float(got) == pytest.approx(expected, rel=RTOL32)


@pytest.mark.parametrize(
    ("dtype", "value"), [(np.float32, 1e39), (np.float16, 7e4), (np.float32, -1e39)]
)
def test_python_scale_and_bias_must_be_finite_in_the_inputs_dtype(dtype, value):
    # 1e39 * float32 embeddings is inf, and inf * 0 made the losses NaN without an error
    e = np.eye(2, dtype=dtype)
    for field in ("scale", "bias"):
        kwargs = {"scale": 1.0, "bias": 0.0, field: value}
        with pytest.raises(ValueError, match=rf"^{field} must be finite in float(32|16), got"):
            sigmoid_loss_matrix(e, e, **kwargs)
    # in float64 the same numbers are fine
    assert np.isfinite(sigmoid_loss_matrix(e.astype(np.float64), e, scale=1e39, bias=0.0)).all()


@pytest.mark.parametrize(
    ("shape", "error"), [(5, TypeError), (None, TypeError), ((True,), ValueError)]
)
def test_random_shape_must_be_a_tuple_of_ints(shape, error):
    # an int shape used to fail inside len() with a message that did not name shape
    for draw in (uniform, gumbel_noise):
        with pytest.raises(error, match=r"^shape must be"):
            draw(0, shape, xp=np)
