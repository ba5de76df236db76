"""joint_select_embeddings: the oracle, the materialised path, every backend, no N x N memory."""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from helpers import (
    RTOL,
    assert_matches_oracle,
    assert_same_selection,
    embedding_magnitude,
    joint_perturbed,
    make_models,
    needed,
    peak_traced_bytes,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st

import jestcore
from jestcore import (
    PairEmbeddings,
    gumbel_noise,
    joint_select,
    joint_select_embeddings,
    sigmoid_loss_matrix,
)

SCORES = ["learnability", "hard_learner", "easy_reference"]

#: Score gains the exact tests run at: Algorithm 1 as printed, one in between, the default.
GAINS = (1.0, 3.5, 100.0)


def materialised_scores(learner, reference, score):
    """The score matrix built with the library's own functions (the materialised path)."""
    losses = {}
    for name, m in (("learner", learner), ("reference", reference)):
        if m is not None:
            losses[name] = sigmoid_loss_matrix(m.image, m.text, scale=m.scale, bias=m.bias)
    if score == "learnability":
        return jestcore.learnability(losses["learner"], losses["reference"])
    if score == "hard_learner":
        return jestcore.hard_learner(losses["learner"])
    return jestcore.easy_reference(losses["reference"])


@st.composite
def streaming_problems(draw: st.DrawFn, max_n: int = 20):
    n = draw(st.integers(1, max_n))
    n_select = draw(st.integers(1, n))
    n_chunks = draw(st.integers(1, n_select))
    d_learner = draw(st.integers(1, 8))
    d_reference = draw(st.integers(1, 8))
    temperature = st.one_of(st.sampled_from([1.0, 10.0, 100.0]), st.floats(0.1, 120.0))
    bias = st.one_of(st.sampled_from([-10.0, 0.0]), st.floats(-12.0, 5.0))
    params = (draw(temperature), draw(bias), draw(temperature), draw(bias))
    score = draw(st.sampled_from(SCORES))
    seed = draw(st.integers(0, 2**32 - 1))
    return n, n_select, n_chunks, d_learner, d_reference, params, score, seed


@given(
    streaming_problems(),
    st.booleans(),
    st.sampled_from([None, 1, 2, 5]),
    st.booleans(),
    st.booleans(),
    st.sampled_from(GAINS),
)
@example(
    (12, 7, 3, 4, 6, (100.0, -10.0, 10.0, -10.0), "learnability", 3), True, None, False, True, 1.0
)
@example((12, 7, 3, 4, 6, (1.0, 0.0, 10.0, -10.0), "learnability", 3), True, None, False, True, 3.5)
@example(
    (10, 10, 1, 3, 2, (100.0, -10.0, 1.0, 0.0), "hard_learner", 1), True, 1, True, False, 100.0
)
@example((9, 9, 9, 2, 5, (1.0, 0.0, 100.0, -10.0), "easy_reference", 2), False, 2, False, True, 1.0)
def test_streaming_matches_oracle_and_materialised_float64(
    problem, normalise, block_size, array_params, keep_unused, gain
):
    n, n_select, n_chunks, d_l, d_r, params, score, seed = problem
    learner, reference = make_models(seed % 2**31, n, d_l, d_r, params, normalise)
    if array_params:  # learned parameters arrive as 0-d arrays
        learner = learner._replace(scale=np.asarray(learner.scale), bias=np.asarray(learner.bias))
        reference = reference._replace(scale=np.asarray(reference.scale))
    args = needed(learner, reference, score, keep_unused)
    got = joint_select_embeddings(
        *args, n_select, n_chunks=n_chunks, score=score, seed=seed, block_size=block_size,
        gain=gain,
    )  # fmt: skip
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    noise = gumbel_noise(seed, (n_chunks, n), xp=np)
    s = oracle.dense_scores(learner, reference, score)
    magnitude = embedding_magnitude(learner, reference, score)
    assert_matches_oracle(got, s, n_select, n_chunks, noise, gain=gain, magnitude=magnitude)
    via_matrix = joint_select(
        materialised_scores(*needed(learner, reference, score), score),
        n_select,
        n_chunks=n_chunks,
        seed=seed,
        gain=gain,
    )
    assert_same_selection(
        got,
        via_matrix,
        sizes=oracle.split_chunks(n_select, n_chunks),
        n=n,
        perturbed=joint_perturbed(s, noise, magnitude, gain=gain),
        rtol=RTOL["float64"],
    )


@given(streaming_problems(max_n=16), st.sampled_from(GAINS))
def test_streaming_greedy_and_explicit_noise(problem, gain):
    n, n_select, n_chunks, d_l, d_r, params, score, seed = problem
    learner, reference = make_models(seed % 2**31, n, d_l, d_r, params)
    args = needed(learner, reference, score)
    s = oracle.dense_scores(learner, reference, score)
    magnitude = embedding_magnitude(learner, reference, score)
    call = {"n_chunks": n_chunks, "score": score, "gain": gain}
    greedy = joint_select_embeddings(*args, n_select, greedy=True, **call)
    assert_matches_oracle(greedy, s, n_select, n_chunks, None, gain=gain, magnitude=magnitude)
    noise = np.random.default_rng(seed).gumbel(size=(n_chunks, n))
    explicit = joint_select_embeddings(*args, n_select, noise=noise, **call)
    assert_matches_oracle(explicit, s, n_select, n_chunks, noise, gain=gain, magnitude=magnitude)


def test_block_sizes_give_the_same_selection():
    learner, reference = make_models(0, 60, 8, 5, (30.0, -5.0, 10.0, -2.0))
    s = oracle.dense_scores(learner, reference, "learnability")
    noise = gumbel_noise(4, (4, 60), xp=np)
    magnitude = embedding_magnitude(learner, reference, "learnability")
    ref = joint_select_embeddings(learner, reference, 40, n_chunks=4, seed=4)
    assert_matches_oracle(ref, s, 40, 4, noise, gain=100.0, magnitude=magnitude)
    for block_size in (1, 3, 7, 10, 11, 10**6):
        got = joint_select_embeddings(
            learner, reference, 40, n_chunks=4, seed=4, block_size=block_size
        )
        assert_same_selection(
            got,
            ref,
            sizes=oracle.split_chunks(40, 4),
            n=60,
            perturbed=joint_perturbed(s, noise, magnitude, gain=100.0),
            rtol=RTOL["float64"],
        )


def test_paper_like_temperature_and_size():
    # Temperature 100 and bias -10 (SigLIP's init), N = 600, 80% filtering, 16 chunks: logits are
    # sums over hundreds of pairs of losses up to ~110, and the path must still be exact.
    n, n_select, n_chunks = 600, 120, 16
    learner, reference = make_models(1, n, 32, 16, (100.0, -10.0, 100.0, -10.0))
    s = oracle.dense_scores(learner, reference, "learnability")
    magnitude = embedding_magnitude(learner, reference, "learnability")
    noise = gumbel_noise(8, (n_chunks, n), xp=np)
    for gain in GAINS:
        got = joint_select_embeddings(
            learner, reference, n_select, n_chunks=n_chunks, seed=8, gain=gain
        )
        assert_matches_oracle(got, s, n_select, n_chunks, noise, gain=gain, magnitude=magnitude)


def to_backend(backend, model: PairEmbeddings | None, dtype=np.float32) -> PairEmbeddings | None:
    if model is None:
        return None
    image = backend.asarray(np.asarray(model.image, dtype=dtype))
    text = backend.asarray(np.asarray(model.text, dtype=dtype))
    return PairEmbeddings(image, text, model.scale, model.bias)


def test_streaming_on_every_backend(backend):
    # float32 inputs (JAX runs with x64 off); compared with NumPy on the same float32 inputs and
    # with the float64 oracle, both up to float32 near-ties. Eager JAX compiles every new shape
    # (~1 s each), hence fewer examples there.
    @settings(max_examples=3 if backend.name == "jax" else 15)
    @given(streaming_problems(max_n=24), st.booleans(), st.sampled_from(GAINS))
    @example((24, 19, 4, 8, 3, (100.0, -10.0, 100.0, -10.0), "learnability", 5), True, 1.0)
    @example((24, 19, 4, 8, 3, (10.0, -10.0, 10.0, -10.0), "learnability", 5), False, 3.5)
    @example((24, 19, 4, 8, 3, (10.0, -10.0, 10.0, -10.0), "learnability", 5), False, 100.0)
    def check(problem, array_params, gain):
        _check_backend(backend, problem, array_params, gain)

    check()


def _check_backend(backend, problem, array_params, gain):
    n, n_select, n_chunks, d_l, d_r, params, score, seed = problem
    learner, reference = make_models(seed % 2**31, n, d_l, d_r, params)
    f32 = [
        m._replace(image=m.image.astype(np.float32), text=m.text.astype(np.float32))
        for m in (learner, reference)
    ]
    args = needed(*f32, score)
    call = {"n_chunks": n_chunks, "score": score, "seed": seed, "gain": gain}
    expected = joint_select_embeddings(*args, n_select, **call)
    b_args = [to_backend(backend, m) for m in args]
    if array_params:
        b_args = [
            None
            if m is None
            else m._replace(
                scale=backend.asarray(np.float32(m.scale)), bias=backend.asarray(np.float32(m.bias))
            )
            for m in b_args
        ]
    got = backend.to_numpy(joint_select_embeddings(*b_args, n_select, **call))
    s = oracle.dense_scores(*f32, score)
    noise = gumbel_noise(seed, (n_chunks, n), xp=np)
    magnitude = embedding_magnitude(*f32, score)
    sizes = oracle.split_chunks(n_select, n_chunks)
    perturbed = joint_perturbed(s, noise, magnitude, gain=gain)
    assert_same_selection(
        got, expected, sizes=sizes, n=n, perturbed=perturbed, rtol=RTOL["float32"]
    )
    assert_matches_oracle(
        got, s, n_select, n_chunks, noise, gain=gain, rtol=RTOL["float32"], magnitude=magnitude
    )


# array-api-strict has no float16 (it is not in the standard)
@pytest.mark.parametrize("backend", ["numpy", "numpy_readonly", "torch", "jax"], indirect=True)
def test_float16_inputs_equal_their_float32_upcast(backend):
    learner, reference = make_models(3, 50, 8, 6, (100.0, -10.0, 10.0, -5.0))
    half = [to_backend(backend, m, np.float16) for m in (learner, reference)]
    upcast = [
        to_backend(
            backend,
            m._replace(image=m.image.astype(np.float16), text=m.text.astype(np.float16)),
            np.float32,
        )
        for m in (learner, reference)
    ]
    for score in SCORES:
        a = joint_select_embeddings(*needed(*half, score), 30, n_chunks=5, score=score, seed=1)
        b = joint_select_embeddings(*needed(*upcast, score), 30, n_chunks=5, score=score, seed=1)
        # the float16 values are exactly representable in float32, where logits accumulate
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_bfloat16_inputs_equal_their_float32_upcast(framework):
    learner, reference = make_models(4, 40, 8, 8, (100.0, -10.0, 100.0, -10.0))
    if framework == "torch":
        import torch

        def cast(x, dtype):
            return torch.from_numpy(np.asarray(x, dtype=np.float32)).to(dtype)

        def upcast(x, dtype):
            return x.to(dtype)

        low, high = torch.bfloat16, torch.float32
    else:
        import jax.numpy as jnp

        def cast(x, dtype):
            return jnp.asarray(np.asarray(x, dtype=np.float32)).astype(dtype)

        def upcast(x, dtype):
            return x.astype(dtype)

        low, high = jnp.bfloat16, jnp.float32
    bf = [
        m._replace(image=cast(m.image, low), text=cast(m.text, low)) for m in (learner, reference)
    ]
    up = [m._replace(image=upcast(m.image, high), text=upcast(m.text, high)) for m in bf]
    a = joint_select_embeddings(*bf, 25, n_chunks=5, seed=2)
    b = joint_select_embeddings(*up, 25, n_chunks=5, seed=2)
    assert type(a) is type(b)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_pair_embeddings_is_a_jax_pytree():
    import jax
    import jax.numpy as jnp

    m = PairEmbeddings(jnp.ones((3, 2)), jnp.zeros((3, 2)), jnp.asarray(10.0), jnp.asarray(-1.0))
    assert len(jax.tree_util.tree_leaves(m)) == 4
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, m)
    assert isinstance(doubled, PairEmbeddings)
    assert float(doubled.scale) == 20.0


@pytest.mark.parametrize("namespace", ["numpy", "array_api_strict"])
def test_no_n_by_n_allocation(namespace):
    # Paper-like settings (80% filtering, 16 chunks). NumPy (and array-api-strict, which wraps it)
    # report every array to tracemalloc, so any single N x N array shows in the traced peak.

    def models(n):
        learner, reference = make_models(0, n, 4, 4, (100.0, -10.0, 100.0, -10.0))
        if namespace == "array_api_strict":
            import array_api_strict as xp

            return [
                m._replace(image=xp.asarray(m.image), text=xp.asarray(m.text))
                for m in (learner, reference)
            ]
        return [learner, reference]

    def streaming_peak(n, block_size):
        learner, reference = models(n)
        return peak_traced_bytes(
            lambda: joint_select_embeddings(
                learner, reference, n // 5, n_chunks=16, seed=0, block_size=block_size
            )
        )

    # warm up on a small problem: first-call imports are not the algorithm's memory
    joint_select_embeddings(*models(64), 12, n_chunks=4, seed=0)
    # Default blocks: temporaries of (chunk x N) floats, far below one float64 N x N matrix.
    n = 2048
    float_matrix = n * n * 8
    assert streaming_peak(n, None) < float_matrix / 4, float_matrix
    # The same measurement flags the materialised path, which forms N x N matrices.
    learner, _ = models(n)
    materialised = peak_traced_bytes(
        lambda: joint_select(
            materialised_scores(learner, None, "hard_learner"), n // 5, n_chunks=16, seed=0
        )
    )
    assert materialised >= float_matrix, (materialised, float_matrix)
    # Blocks of 8 rows bound the temporaries to O(N * (d + 8)): below any N x N array at all,
    # even a boolean mask of N * N bytes.
    n = 4096
    assert streaming_peak(n, 8) < n * n / 4, n * n


# ----------------------------------------------------------------------------- argument errors


def test_a_score_that_is_not_a_string_is_a_type_error_naming_score():
    learner, reference = make_models(0, 8, 4, 4, (10.0, -5.0, 10.0, -5.0))
    for bad in (["learnability"], {"learnability"}, 1, None):
        with pytest.raises(TypeError, match=r"score must be a str, one of \['easy_reference'"):
            joint_select_embeddings(learner, reference, 2, n_chunks=1, score=bad, seed=0)
    with pytest.raises(ValueError, match="score must be one of"):
        joint_select_embeddings(learner, reference, 2, n_chunks=1, score="learnabilty", seed=0)


def test_a_model_the_score_does_not_use_is_checked_if_given():
    learner, reference = make_models(1, 8, 4, 4, (10.0, -5.0, 10.0, -5.0))
    call = dict(n_chunks=1, seed=0)
    # None, or a valid model, is accepted and ignored
    expected = joint_select_embeddings(None, reference, 3, score="easy_reference", **call)
    got = joint_select_embeddings(learner, reference, 3, score="easy_reference", **call)
    np.testing.assert_array_equal(got, expected)
    got = joint_select_embeddings(
        learner, PairEmbeddings(*learner), 3, score="hard_learner", **call
    )
    np.testing.assert_array_equal(
        got, joint_select_embeddings(learner, None, 3, score="hard_learner", **call)
    )
    with pytest.raises(TypeError, match="learner must be a PairEmbeddings"):
        joint_select_embeddings("garbage", reference, 3, score="easy_reference", **call)
    with pytest.raises(TypeError, match="reference must be a PairEmbeddings"):
        joint_select_embeddings(learner, 42, 3, score="hard_learner", **call)
    short = PairEmbeddings(learner.image[:5], learner.text[:5], 1.0, 0.0)
    with pytest.raises(ValueError, match="the same N examples"):
        joint_select_embeddings(short, reference, 3, score="easy_reference", **call)
    ints = PairEmbeddings(np.ones((8, 4), dtype=np.int64), learner.text, 1.0, 0.0)
    with pytest.raises(TypeError, match=r"learner\.image must have a real floating dtype"):
        joint_select_embeddings(ints, reference, 3, score="easy_reference", **call)


def test_float64_noise_is_used_as_given_with_float32_embeddings():
    # Two candidates whose float32 logits tie; noise that differs by 1e-12 (lost in float32)
    # decides between them when used as given.
    e = np.zeros((2, 1), dtype=np.float32)
    model = PairEmbeddings(e, e, 1.0, 0.0)
    noise = np.array([[0.0, 1e-12]])
    got = joint_select_embeddings(model, None, 1, n_chunks=1, score="hard_learner", noise=noise)
    assert got.tolist() == [1]
    got = joint_select(np.zeros((2, 2), dtype=np.float32), 1, n_chunks=1, noise=noise)
    assert got.tolist() == [1]
    got = jestcore.independent_select(np.zeros(2, dtype=np.float32), 1, noise=noise[0])
    assert got.tolist() == [1]
