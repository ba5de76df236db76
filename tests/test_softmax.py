"""The softmax (CLIP) loss, the paper's Algorithm 3: streamed selection and batch scores.

``joint_select_embeddings(..., loss="softmax")`` against a literal transcription of Algorithm 3
(``oracle_softmax``, float64, sharing no code), on every backend, under ``jax.jit``, with
low-precision inputs and temperatures that would overflow an unshifted ``exp``; and
``batch_score_embeddings(..., loss="softmax")`` against the oracle's batch loss.
"""

from __future__ import annotations

import inspect

import numpy as np
import oracle_softmax as oracle
import pytest
from helpers import (
    RTOL,
    assert_same_selection,
    make_models,
    needed,
    peak_traced_bytes,
    to_namespace,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jestcore.backends import get_backend_module

from jestcore import PairEmbeddings, batch_score_embeddings, gumbel_noise, joint_select_embeddings

SCORES = ["learnability", "hard_learner", "easy_reference"]

#: The gain that seeded and noisy selections apply to the logits: ``joint_select_embeddings``'s
#: default (the paper's Algorithm 2). The oracle applies the same; greedy selections do not
#: depend on it.
GAIN = float(inspect.signature(joint_select_embeddings).parameters["gain"].default)


def as_float(model: PairEmbeddings | None, dtype) -> PairEmbeddings | None:
    if model is None:
        return None
    return model._replace(image=model.image.astype(dtype), text=model.text.astype(dtype))


def softmax_perturbed(learner, reference, score, noise, gain: float = GAIN):
    """``perturbed(before, k)`` for :func:`helpers.assert_same_selection`, from the oracle.

    The values are the oracle's perturbed logits given the items chosen before; the magnitude
    (the scale of a logit's rounding error) sums, per model, ``|L_ii|``, the largest
    ``scale * sum_k |x_jk| |y_ik|`` over the chosen ``j`` in each direction, ``log |B|`` and
    ``|bias|`` (the oracle keeps the bias, the library drops it), and ``|noise|``.
    """
    models = [
        m
        for m, sign in ((learner, 1), (reference, -1))
        if not (score == "hard_learner" and sign < 0)
        and not (score == "easy_reference" and sign > 0)
    ]
    n = np.asarray(models[0].image).shape[0]
    g = None if noise is None else np.asarray(noise, dtype=np.float64)

    def perturbed(before, k):
        before = np.asarray(before, dtype=np.int64)
        is_sampled = np.zeros(n)
        is_sampled[before] = 1.0
        values = gain * oracle.conditional_logits(
            learner, reference, score, is_sampled if k else None
        )
        mags = np.zeros(n)
        for m in models:
            image, text = (np.abs(np.asarray(a, dtype=np.float64)) for a in (m.image, m.text))
            scale = abs(float(m.scale))
            mags += scale * np.sum(image * text, axis=1) + abs(float(m.bias))
            if k:
                mags += scale * (image @ text[before].T).max(axis=1)
                mags += scale * (text @ image[before].T).max(axis=1)
                mags += np.log(len(before))
        mags *= gain
        if g is not None:
            values = values + g[k]
            mags = mags + np.abs(g[k])
        return values, mags

    return perturbed


def assert_matches_algorithm_3(got, learner, reference, score, n_select, n_chunks, noise, rtol):
    """``got`` equals the literal Algorithm 3 with ``noise`` (``None``: greedy), near-ties aside."""
    gain = GAIN if noise is not None else 1.0
    expected = oracle.select(learner, reference, score, n_select, n_chunks, noise, gain)
    assert_same_selection(
        got,
        expected,
        sizes=oracle.split_chunks(n_select, n_chunks),
        n=np.asarray((learner if learner is not None else reference).image).shape[0],
        perturbed=softmax_perturbed(learner, reference, score, noise, gain),
        rtol=rtol,
    )


@st.composite
def problems(draw: st.DrawFn, max_n: int = 20):
    n = draw(st.integers(1, max_n))
    n_select = draw(st.integers(1, n))
    n_chunks = draw(st.integers(1, n_select))
    d_learner = draw(st.integers(1, 8))
    d_reference = draw(st.integers(1, 8))
    temperature = st.one_of(st.sampled_from([1.0, 10.0, 100.0]), st.floats(0.1, 120.0))
    bias = st.one_of(st.just(0.0), st.floats(-12.0, 5.0))
    params = (draw(temperature), draw(bias), draw(temperature), draw(bias))
    score = draw(st.sampled_from(SCORES))
    seed = draw(st.integers(0, 2**32 - 1))
    return n, n_select, n_chunks, d_learner, d_reference, params, score, seed


# ----------------------------------------------------------------------------- vs Algorithm 3


@given(problems(), st.booleans(), st.sampled_from([None, 1, 2, 5]))
@example((12, 7, 3, 4, 6, (100.0, -10.0, 10.0, 0.0), "learnability", 3), True, None)
@example((10, 10, 1, 3, 2, (100.0, 0.0, 1.0, 0.0), "hard_learner", 1), True, 1)
@example((9, 9, 9, 2, 5, (1.0, 0.0, 100.0, -10.0), "easy_reference", 2), False, 2)
def test_matches_algorithm_3_float64(problem, normalise, block_size):
    n, n_select, n_chunks, d_l, d_r, params, score, seed = problem
    learner, reference = make_models(seed % 2**31, n, d_l, d_r, params, normalise)
    args = needed(learner, reference, score)
    call = dict(n_chunks=n_chunks, score=score, loss="softmax", block_size=block_size)
    got = joint_select_embeddings(*args, n_select, seed=seed, **call)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    noise = gumbel_noise(seed, (n_chunks, n), xp=np)
    assert_matches_algorithm_3(got, *args, score, n_select, n_chunks, noise, RTOL["float64"])
    greedy = joint_select_embeddings(*args, n_select, greedy=True, **call)
    assert_matches_algorithm_3(greedy, *args, score, n_select, n_chunks, None, RTOL["float64"])
    explicit = np.random.default_rng(seed).gumbel(size=(n_chunks, n))
    got = joint_select_embeddings(*args, n_select, noise=explicit, **call)
    assert_matches_algorithm_3(got, *args, score, n_select, n_chunks, explicit, RTOL["float64"])


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("scale", [1.0, 10.0, 100.0])
@pytest.mark.parametrize(("n", "n_select", "n_chunks"), [(150, 37, 5), (160, 32, 16), (90, 45, 7)])
def test_paper_like_sizes_and_chunks_that_do_not_divide(score, scale, n, n_select, n_chunks):
    # The reference a little sharper than the learner, as after training on curated data.
    learner, reference = make_models(n + n_chunks, n, 16, 12, (scale, 0.0, 2 * scale, 0.0))
    args = needed(learner, reference, score)
    seed = 7 * n + n_chunks
    got = joint_select_embeddings(
        *args, n_select, n_chunks=n_chunks, score=score, loss="softmax", seed=seed
    )
    noise = gumbel_noise(seed, (n_chunks, n), xp=np)
    expected = oracle.select(*args, score, n_select, n_chunks, noise, GAIN)
    # exact: a genuine near-tie at these sizes would be a one-in-millions coincidence
    np.testing.assert_array_equal(got, expected)
    greedy = joint_select_embeddings(
        *args, n_select, n_chunks=n_chunks, score=score, loss="softmax", greedy=True
    )
    np.testing.assert_array_equal(greedy, oracle.select(*args, score, n_select, n_chunks))


def test_softmax_and_sigmoid_select_differently_and_sigmoid_is_the_default():
    learner, reference = make_models(0, 80, 8, 8, (10.0, -5.0, 20.0, -5.0))
    default = joint_select_embeddings(learner, reference, 20, n_chunks=4, seed=3)
    sigmoid = joint_select_embeddings(learner, reference, 20, n_chunks=4, seed=3, loss="sigmoid")
    softmax = joint_select_embeddings(learner, reference, 20, n_chunks=4, seed=3, loss="softmax")
    np.testing.assert_array_equal(default, sigmoid)
    assert default.tolist() != softmax.tolist()


def test_a_bias_cancels():
    # A bias adds the same constant to every logit of a softmax, so the library leaves it out
    # (the same indices, bit for bit) and the oracle, which keeps it, selects the same.
    learner, reference = make_models(5, 60, 8, 8, (30.0, 0.0, 60.0, 0.0))
    call = dict(n_chunks=4, loss="softmax", seed=11)
    plain = joint_select_embeddings(learner, reference, 25, **call)
    biased = [learner._replace(bias=-10.0), reference._replace(bias=np.float64(3.5))]
    got = joint_select_embeddings(*biased, 25, **call)
    np.testing.assert_array_equal(got, plain)
    noise = gumbel_noise(11, (4, 60), xp=np)
    assert_matches_algorithm_3(got, *biased, "learnability", 25, 4, noise, RTOL["float64"])
    a = batch_score_embeddings(learner, reference, plain, loss="softmax")
    b = batch_score_embeddings(*biased, plain, loss="softmax")
    assert float(a) == float(b)


def test_block_sizes_give_the_same_selection():
    learner, reference = make_models(0, 60, 8, 5, (30.0, 0.0, 10.0, 0.0))
    ref = joint_select_embeddings(learner, reference, 40, n_chunks=4, seed=4, loss="softmax")
    noise = gumbel_noise(4, (4, 60), xp=np)
    for block_size in (1, 3, 7, 10, 11, 10**6):
        got = joint_select_embeddings(
            learner, reference, 40, n_chunks=4, seed=4, loss="softmax", block_size=block_size
        )
        assert_same_selection(
            got,
            ref,
            sizes=oracle.split_chunks(40, 4),
            n=60,
            perturbed=softmax_perturbed(learner, reference, "learnability", noise),
            rtol=RTOL["float64"],
        )


# ----------------------------------------------------------------------------- backends


def test_on_every_backend(xp):
    # float32 inputs (JAX runs with x64 off), compared with NumPy on the same float32 inputs and
    # with the float64 Algorithm 3, both up to float32 near-ties. Eager JAX compiles every new
    # shape, hence fewer examples there.
    @settings(max_examples=3 if xp.name == "jax" else 12)
    @given(problems(max_n=24), st.booleans())
    @example((24, 19, 4, 8, 3, (100.0, 0.0, 100.0, -10.0), "learnability", 5), True)
    def check(problem, array_params):
        n, n_select, n_chunks, d_l, d_r, params, score, seed = problem
        learner, reference = make_models(seed % 2**31, n, d_l, d_r, params)
        f32 = needed(as_float(learner, np.float32), as_float(reference, np.float32), score)
        call = dict(n_chunks=n_chunks, score=score, loss="softmax", seed=seed)
        expected = joint_select_embeddings(*f32, n_select, **call)

        def convert(m):
            if m is None:
                return None
            scale, bias = m.scale, m.bias
            if array_params:
                scale, bias = (
                    xp.from_numpy(np.asarray(v, dtype=np.float32)) for v in (scale, bias)
                )
            return PairEmbeddings(xp.from_numpy(m.image), xp.from_numpy(m.text), scale, bias)

        got = xp.to_numpy(joint_select_embeddings(*(convert(m) for m in f32), n_select, **call))
        noise = gumbel_noise(seed, (n_chunks, n), xp=np)
        assert_same_selection(
            got,
            expected,
            sizes=oracle.split_chunks(n_select, n_chunks),
            n=n,
            perturbed=softmax_perturbed(*f32, score, noise),
            rtol=RTOL["float32"],
        )
        assert_matches_algorithm_3(got, *f32, score, n_select, n_chunks, noise, RTOL["float32"])

    check()


def test_jax_jit_compiles_once_with_loss_static():
    import jax
    import jax.numpy as jnp

    traces = []

    def select(learner, reference, seed):
        traces.append(1)
        return joint_select_embeddings(
            learner, reference, 12, n_chunks=5, loss="softmax", seed=seed
        )

    jitted = jax.jit(select)
    for step in range(4):
        params = (float(10 + 30 * step), 0.0, 100.0, -10.0)
        learner, reference = (as_float(m, np.float32) for m in make_models(step, 48, 6, 6, params))
        seed = 100 + step
        on_jax = [PairEmbeddings(*(jnp.asarray(x) for x in m)) for m in (learner, reference)]
        got = jitted(*on_jax, jnp.uint32(seed))
        assert isinstance(got, jax.Array)
        expected = joint_select_embeddings(
            learner, reference, 12, n_chunks=5, loss="softmax", seed=seed
        )
        noise = gumbel_noise(seed, (5, 48), xp=np)
        assert_same_selection(
            got,
            expected,
            sizes=oracle.split_chunks(12, 5),
            n=48,
            perturbed=softmax_perturbed(learner, reference, "learnability", noise),
            rtol=RTOL["float32"],
        )
    assert len(traces) == 1

    # The spec jitted with static loss: the other loss is another program, the same one for both.
    # (a wrapper of its own: jax.jit shares one cache per function object across the session)
    def spec_fn(learner, reference, n_select, **kwargs):
        return joint_select_embeddings(learner, reference, n_select, **kwargs)

    static = ("n_select", "n_chunks", "score", "loss", "greedy")
    spec = jax.jit(spec_fn, static_argnames=static)
    a = spec(*on_jax, n_select=12, n_chunks=5, loss="softmax", seed=jnp.uint32(seed))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(got))
    spec(*on_jax, n_select=12, n_chunks=5, loss="sigmoid", seed=jnp.uint32(seed))
    spec(*on_jax, n_select=12, n_chunks=5, loss="softmax", seed=jnp.uint32(seed + 1))
    assert spec._cache_size() == 2


@pytest.mark.parametrize("xp", ["numpy", "torch", "jax"], indirect=True)
def test_float16_inputs_equal_their_float32_upcast(xp):
    # array-api-strict has no float16 (it is not in the standard)
    learner, reference = make_models(3, 50, 8, 6, (100.0, 0.0, 10.0, 0.0))
    half = [as_float(m, np.float16) for m in (learner, reference)]
    upcast = [as_float(m, np.float32) for m in half]  # exact: float16 values fit float32

    def on(m):
        return PairEmbeddings(xp.from_numpy(m.image), xp.from_numpy(m.text), m.scale, m.bias)

    for score in SCORES:
        call = dict(n_chunks=5, score=score, loss="softmax", seed=1)
        a = joint_select_embeddings(*needed(*map(on, half), score), 30, **call)
        b = joint_select_embeddings(*needed(*map(on, upcast), score), 30, **call)
        np.testing.assert_array_equal(xp.to_numpy(a), xp.to_numpy(b))
        idx = xp.from_numpy(np.arange(0, 50, 3))
        sa = batch_score_embeddings(
            *needed(*map(on, half), score), idx, score=score, loss="softmax"
        )
        sb = batch_score_embeddings(
            *needed(*map(on, upcast), score), idx, score=score, loss="softmax"
        )
        assert str(sa.dtype).endswith("float32")
        assert float(sa) == float(sb)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_bfloat16_inputs_equal_their_float32_upcast(framework):
    learner, reference = make_models(4, 40, 8, 8, (100.0, 0.0, 100.0, 0.0))
    if framework == "torch":
        import torch

        def cast(x):
            return torch.from_numpy(np.asarray(x, dtype=np.float32)).to(torch.bfloat16)

        def upcast(x):
            return x.to(torch.float32)
    else:
        import jax.numpy as jnp

        def cast(x):
            return jnp.asarray(np.asarray(x, dtype=np.float32)).astype(jnp.bfloat16)

        def upcast(x):
            return x.astype(jnp.float32)

    bf = [m._replace(image=cast(m.image), text=cast(m.text)) for m in (learner, reference)]
    up = [m._replace(image=upcast(m.image), text=upcast(m.text)) for m in bf]
    a = joint_select_embeddings(*bf, 25, n_chunks=5, loss="softmax", seed=2)
    b = joint_select_embeddings(*up, 25, n_chunks=5, loss="softmax", seed=2)
    assert type(a) is type(b)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------------------- overflow


def aligned_models(n: int, d: int, seed: int) -> tuple[PairEmbeddings, PairEmbeddings]:
    """Models whose pairs (and many non-pairs) are nearly parallel: at scale 100 their logits
    are near 100, beyond float32's ``exp`` (which overflows above ~88.7)."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(d)
    out = []
    for spread in (0.05, 0.2):
        x = centre + spread * rng.standard_normal((2, n, d))
        x /= np.linalg.norm(x, axis=-1, keepdims=True)
        out.append(PairEmbeddings(*x, 100.0, 0.0))
    return out[0], out[1]


def test_scale_100_never_overflows(xp):
    learner, reference = aligned_models(40, 8, 0)
    f32 = [as_float(m, np.float32) for m in (learner, reference)]
    # the unshifted exponentials would overflow in float32
    assert np.max(100.0 * np.einsum("id,jd->ij", f32[0].image, f32[0].text)) > 89
    on = [PairEmbeddings(xp.from_numpy(m.image), xp.from_numpy(m.text), 100.0, 0.0) for m in f32]
    got = xp.to_numpy(joint_select_embeddings(*on, 16, n_chunks=4, loss="softmax", seed=9))
    noise = gumbel_noise(9, (4, 40), xp=np)
    assert_matches_algorithm_3(got, *f32, "learnability", 16, 4, noise, RTOL["float32"])
    score = xp.to_numpy(batch_score_embeddings(*on, xp.from_numpy(got), loss="softmax"))
    expected = oracle.batch_loss(f32[0], got) - oracle.batch_loss(f32[1], got)
    assert np.isfinite(score)
    # float32 log-sum-exps of terms near 100, summed over 16 examples and two models
    np.testing.assert_allclose(score, expected, rtol=0, atol=16 * 4 * 100 * 1e-6)


@pytest.mark.parametrize("name", ["generic", "numpy", "torch", "jax"])
def test_logsumexp_columns_is_max_shifted(name):
    module = get_backend_module(name)
    x = np.linspace(-1.0, 1.0, 60).reshape(6, 10).astype(np.float32)
    x.flags.writeable = False  # inputs are never written to
    for scale in (1.0, 100.0, 1e4):
        got = np.asarray(module.logsumexp_columns(to_namespace(name, x), scale))
        z = scale * x.astype(np.float64)
        top = z.max(axis=0)
        expected = top + np.log(np.exp(z - top).sum(axis=0))
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, expected, rtol=8 * np.finfo(np.float32).eps)
    # an infinite entry gives an infinite result, never NaN
    y = np.array([[np.inf, 0.0], [1.0, 0.0]], dtype=np.float32)
    got = np.asarray(module.logsumexp_columns(to_namespace(name, y), 1.0))
    assert got[0] == np.inf and np.isclose(got[1], np.log(2.0))


# ----------------------------------------------------------------------------- batch score


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("block_size", [None, 1, 4])
def test_batch_score_is_the_summed_clip_loss(score, block_size):
    learner, reference = make_models(2, 30, 6, 5, (20.0, 0.0, 50.0, -4.0))
    idx = np.array([3, 17, 0, 29, 8, 11, 12])
    args = needed(learner, reference, score)
    got = batch_score_embeddings(*args, idx, score=score, loss="softmax", block_size=block_size)
    parts = {
        "learnability": oracle.batch_loss(learner, idx) - oracle.batch_loss(reference, idx),
        "hard_learner": oracle.batch_loss(learner, idx),
        "easy_reference": -oracle.batch_loss(reference, idx),
    }
    assert got.shape == () and got.dtype == np.float64
    np.testing.assert_allclose(float(got), parts[score], rtol=1e-12)
    # one example: CLIP's loss of a batch of one is 0 (its only candidate is its own pair)
    one = batch_score_embeddings(*args, idx[:1], score=score, loss="softmax")
    assert abs(float(one)) < 1e-12


def test_batch_score_on_every_backend(xp):
    learner, reference = (
        as_float(m, np.float32) for m in make_models(6, 40, 8, 8, (30.0, 0, 60.0, 0))
    )
    idx = np.array([5, 1, 30, 22, 9, 14, 39, 0])
    on = [
        PairEmbeddings(xp.from_numpy(m.image), xp.from_numpy(m.text), m.scale, m.bias)
        for m in (learner, reference)
    ]
    got = batch_score_embeddings(*on, xp.from_numpy(idx), loss="softmax", block_size=3)
    assert xp.is_mine(got)
    expected = oracle.batch_loss(learner, idx) - oracle.batch_loss(reference, idx)
    # float32: terms of size ~60 summed over 8 examples and two models
    np.testing.assert_allclose(
        float(xp.to_numpy(got)), expected, rtol=0, atol=8 * 2 * 60 * 4e-7 * 8
    )


def test_selection_raises_the_batch_score_over_uniform():
    # Greedy joint selection grows the softmax batch learnability; a uniform batch does not.
    learner, reference = make_models(8, 200, 8, 8, (10.0, 0.0, 30.0, 0.0))
    chosen = joint_select_embeddings(
        learner, reference, 40, n_chunks=8, loss="softmax", greedy=True
    )
    best = float(batch_score_embeddings(learner, reference, chosen, loss="softmax"))
    rng = np.random.default_rng(0)
    uniform = [
        float(batch_score_embeddings(learner, reference, rng.permutation(200)[:40], loss="softmax"))
        for _ in range(20)
    ]
    assert best > max(uniform)


# ----------------------------------------------------------------------------- memory, errors


def test_no_n_by_n_allocation():
    # NumPy reports every array to tracemalloc, so any single N x N array shows in the peak.
    def models(n):
        return make_models(0, n, 4, 4, (100.0, 0.0, 100.0, 0.0))

    joint_select_embeddings(*models(64), 12, n_chunks=4, seed=0, loss="softmax")  # warm up
    n = 4096
    learner, reference = models(n)
    peak = peak_traced_bytes(
        lambda: joint_select_embeddings(
            learner, reference, n // 5, n_chunks=16, seed=0, loss="softmax", block_size=8
        )
    )
    assert peak < n * n / 4, (peak, n * n)


@pytest.mark.parametrize(
    ("loss", "error", "match"),
    [
        (None, TypeError, r"loss must be a str, one of \['sigmoid', 'softmax'\], got None"),
        (1, TypeError, "loss must be a str"),
        (["softmax"], TypeError, "loss must be a str"),
        ("clip", ValueError, r"loss must be one of \['sigmoid', 'softmax'\], got 'clip'"),
        ("Softmax", ValueError, "loss must be one of"),
    ],
)
def test_a_bad_loss_is_refused_naming_loss(loss, error, match):
    learner, reference = make_models(0, 8, 4, 4, (10.0, 0.0, 10.0, 0.0))
    with pytest.raises(error, match=match):
        joint_select_embeddings(learner, reference, 2, n_chunks=1, loss=loss, seed=0)
    with pytest.raises(error, match=match):
        batch_score_embeddings(learner, reference, np.array([0, 1]), loss=loss)
    # before any other check: with a bad n_select too, the loss is what is reported
    with pytest.raises(error, match=match):
        joint_select_embeddings(learner, reference, 99, n_chunks=1, loss=loss, seed=0)


def test_softmax_validates_like_sigmoid():
    learner, reference = make_models(0, 8, 4, 4, (10.0, 0.0, 10.0, 0.0))
    bad = learner._replace(bias=float("nan"))
    with pytest.raises(ValueError, match="bias must be finite"):
        joint_select_embeddings(bad, reference, 2, n_chunks=1, loss="softmax", seed=0)
    nan = learner._replace(image=np.where(np.eye(8, 4) > 0, np.nan, learner.image))
    with pytest.raises(ValueError, match=r"learner\.image must be finite"):
        joint_select_embeddings(nan, reference, 2, n_chunks=1, loss="softmax", seed=0)
    with pytest.raises(ValueError, match="needs reference embeddings"):
        joint_select_embeddings(learner, None, 2, n_chunks=1, loss="softmax", seed=0)
