"""jestcore.adapters.jax on one device: scan-compiled selection, pytree state, gathering.

Every selection is compared with the NumPy spec on the same float32 inputs (near-tie tolerant)
and, for score matrices, with the literal Algorithm 1.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest
from helpers import (
    RTOL,
    assert_same_embeddings_selection,
    assert_same_selection,
    float32_models,
    joint_perturbed,
    needed,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jestcore.adapters import jax as jj

import jestcore
from jestcore import PairEmbeddings, fold_in, gumbel_noise

SCORES = ["learnability", "hard_learner", "easy_reference"]
STATIC = ("n_select", "n_chunks", "score", "greedy", "block_size")
SELECT = jax.jit(jj.joint_select_embeddings, static_argnames=STATIC)
SELECT_MATRIX = jax.jit(jj.joint_select, static_argnames=("n_select", "n_chunks", "gain", "greedy"))
GAINS = (1.0, 3.5, 100.0)


def on_jax(model):
    return None if model is None else PairEmbeddings(*(jnp.asarray(x) for x in model))


# ----------------------------------------------------------------------------- noise


def test_gumbel_rows_are_the_portable_stream():
    # Computed floats from calls of different shapes (a vectorised pass vs row by row, 70 vs
    # 30 columns): compared to a few float32 ulp of 1, absolutely (near g = 0, -log(-log(u))
    # cancels); NumPy's log may also differ from XLA's in the last bit.
    for seed in (0, 12345, 2**32 - 1):
        full = np.asarray(jestcore.gumbel_noise(seed, (5, 70), xp=jnp))
        close = dict(rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.asarray(jj.gumbel_rows(seed, 5, 70)), full, **close)
        shifted = jax.jit(jj.gumbel_rows, static_argnums=(1, 2))(jnp.uint32(seed), 5, 30, offset=40)
        np.testing.assert_allclose(np.asarray(shifted), full[:, 40:], **close)
        np.testing.assert_allclose(full, gumbel_noise(seed, (5, 70), xp=np), **close)
        # the same noise on NumPy, vectorised by the spec (what joint_select(seed=...) adds)
        rows = jestcore.selection.gumbel_rows(seed, 5, 30, xp=np, offset=40)
        np.testing.assert_allclose(rows, gumbel_noise(seed, (5, 70), xp=np)[:, 40:], **close)


# ----------------------------------------------------------------------------- selection


@st.composite
def problems(draw: st.DrawFn):
    n = draw(st.sampled_from([10, 24]))  # few shapes: each new one compiles
    n_select = draw(st.integers(1, n))
    n_chunks = draw(st.integers(1, min(n_select, 7)))
    randomness = draw(st.sampled_from(["seed", "noise", "greedy"]))
    block_size = draw(st.sampled_from([None, 1, 3]))
    return n, n_select, n_chunks, draw(st.sampled_from(SCORES)), randomness, block_size


@settings(max_examples=10)
@given(problems(), st.integers(0, 2**32 - 1))
@example((24, 13, 4, "learnability", "seed", None), 7)  # two chunk sizes: two scans
@example((10, 10, 10, "hard_learner", "greedy", 1), 0)  # chunks of one
@example((10, 10, 1, "easy_reference", "noise", None), 3)  # one chunk: no scan at all
def test_scan_selection_selects_what_the_numpy_spec_selects(problem, seed):
    n, n_select, n_chunks, score, randomness, block_size = problem
    models = float32_models(seed % 1000, n)
    args = needed(*models, score)
    noise = gumbel_noise(seed, (n_chunks, n), xp=np)
    kwargs = {
        "seed": {"seed": seed},
        "noise": {"noise": noise},
        "greedy": {"greedy": True},
    }[randomness]
    expected = jestcore.joint_select_embeddings(
        *args, n_select, n_chunks=n_chunks, score=score, block_size=block_size, **kwargs
    )
    if randomness == "seed":
        kwargs = {"seed": jnp.uint32(seed)}
    elif randomness == "noise":
        kwargs = {"noise": jnp.asarray(noise)}
    got = SELECT(
        *map(on_jax, args),
        n_select=n_select,
        n_chunks=n_chunks,
        score=score,
        block_size=block_size,
        **kwargs,
    )
    assert isinstance(got, jax.Array) and got.dtype == jnp.int32
    used = None if randomness == "greedy" else noise
    assert_same_embeddings_selection(got, expected, models, score, n_select, n_chunks, used)


def test_eager_jitted_and_spec_calls_select_the_same_and_unroll_is_deprecated():
    models = float32_models(5, 40)
    jax_models = tuple(map(on_jax, models))
    expected = jestcore.joint_select_embeddings(*models, 15, n_chunks=4, seed=3)
    eager = jj.joint_select_embeddings(*jax_models, 15, n_chunks=4, seed=3)
    noise = gumbel_noise(3, (4, 40), xp=np)
    assert_same_embeddings_selection(eager, expected, models, "learnability", 15, 4, noise)
    # The adapter is an alias of the spec: the spec itself, eager or under jit, agrees exactly.
    spec_jit = jax.jit(jestcore.joint_select_embeddings, static_argnames=STATIC)
    np.testing.assert_array_equal(spec_jit(*jax_models, 15, n_chunks=4, seed=3), eager)
    np.testing.assert_array_equal(
        jestcore.joint_select_embeddings(*jax_models, 15, n_chunks=4, seed=3), eager
    )
    np.testing.assert_array_equal(SELECT(*jax_models, 15, n_chunks=4, seed=3), eager)
    for select in (jj.joint_select_embeddings, SELECT):
        with pytest.warns(DeprecationWarning, match="unroll is deprecated and ignored"):
            unrolled = select(*jax_models, 15, n_chunks=4, seed=3, unroll=True)
        np.testing.assert_array_equal(unrolled, eager)
    with pytest.warns(DeprecationWarning, match="unroll"):
        jj.JESTSelector(batch_size=2, unroll=True)


@settings(max_examples=10)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 12),
    st.integers(1, 5),
    st.booleans(),
    st.sampled_from(GAINS),
)
def test_scan_selection_on_a_matrix_matches_the_oracle_and_numpy(
    seed, n_select, n_chunks, greedy, gain
):
    n, n_chunks = 16, min(n_chunks, n_select)
    s = np.random.default_rng(seed % 1000).standard_normal((n, n)).astype(np.float32)
    randomness = {"greedy": True} if greedy else {"seed": seed}
    got = SELECT_MATRIX(
        jnp.asarray(s),
        n_select,
        n_chunks=n_chunks,
        gain=gain,
        **({"greedy": True} if greedy else {"seed": jnp.uint32(seed)}),
    )
    noise = None if greedy else gumbel_noise(seed, (n_chunks, n), xp=np)
    sizes = oracle.split_chunks(n_select, n_chunks)
    for expected in (
        oracle.select(s.astype(np.float64), n_select, n_chunks, noise, gain=gain),
        jestcore.joint_select(s, n_select, n_chunks=n_chunks, gain=gain, **randomness),
    ):
        assert_same_selection(
            got,
            expected,
            sizes=sizes,
            n=n,
            perturbed=joint_perturbed(s, noise, gain=gain),
            rtol=RTOL["float32"],
        )


def test_one_compilation_serves_every_step():
    traces = []

    def select(learner, reference, seed):
        traces.append(1)
        return jj.joint_select_embeddings(learner, reference, 11, n_chunks=4, seed=seed)

    jitted = jax.jit(select)
    for step in range(5):
        models = float32_models(100 + step, 48)  # new data, scales and biases every step
        got = jitted(*map(on_jax, models), jnp.uint32(step * 977))
        expected = jestcore.joint_select_embeddings(*models, 11, n_chunks=4, seed=step * 977)
        noise = gumbel_noise(step * 977, (4, 48), xp=np)
        assert_same_embeddings_selection(got, expected, models, "learnability", 11, 4, noise)
    assert len(traces) == 1
    assert jitted._cache_size() == 1


def test_x64_on_selects_in_float64_with_int64_indices():
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        x = rng.standard_normal((4, 30, 5))
        models = (
            PairEmbeddings(x[0], x[1], 10.0, -5.0),
            PairEmbeddings(x[2], x[3], np.float64(4.0), np.float64(-2.0)),
        )
        got = SELECT(*map(on_jax, models), 11, n_chunks=3, seed=jnp.uint32(8))
        assert got.dtype == jnp.int64
        expected = jestcore.joint_select_embeddings(*models, 11, n_chunks=3, seed=8)
        noise = gumbel_noise(8, (3, 30), xp=np)
        assert_same_embeddings_selection(  # both selections use the default gain
            got, expected, models, "learnability", 11, 3, noise, rtol=RTOL["float64"]
        )
        state = jj.init_state(5)
        assert (state.seed.dtype, state.step.dtype) == (jnp.uint32, jnp.int32)
        assert state.next().step.dtype == jnp.int32


def test_non_finite_candidates_rank_last_under_jit_and_are_refused_eagerly():
    learner, reference = float32_models(2, 12)
    image = learner.image.copy()
    image[[3, 7]] = np.nan
    bad = on_jax(learner._replace(image=image))
    with pytest.raises(
        ValueError, match=r"learner.image must be finite, but learner.image\[3, 0\]"
    ):
        jj.joint_select_embeddings(bad, on_jax(reference), 4, n_chunks=2, seed=0)
    got = np.asarray(SELECT(bad, on_jax(reference), 12, n_chunks=3, seed=0))
    # only rows 3 and 7 (and pairs with them) are non-finite: every other candidate's logit stays
    # finite while 3 and 7 are unselected, so they come last, in index order (they tie).
    assert got[-2:].tolist() == [3, 7]
    assert sorted(got[:-2].tolist()) == [i for i in range(12) if i not in (3, 7)]


def test_bad_arguments_are_refused_before_any_work():
    learner, reference = map(on_jax, float32_models(0, 8))
    with pytest.raises(ValueError, match="exactly one source of randomness"):
        jj.joint_select_embeddings(learner, reference, 2, n_chunks=1, seed=0, greedy=True)
    with pytest.raises(ValueError, match="n_select must be between 1 and N = 8"):
        jj.joint_select_embeddings(learner, reference, 9, seed=0)
    with pytest.raises(ValueError, match="n_chunks must be between 1 and n_select"):
        jj.joint_select_embeddings(learner, reference, 2, n_chunks=3, seed=0)
    with pytest.raises(ValueError, match='score="learnability" needs reference'):
        jj.joint_select_embeddings(learner, None, 2, n_chunks=1, seed=0)
    with pytest.raises(ValueError, match="learner and reference must embed the same N"):
        short = PairEmbeddings(reference.image[:4], reference.text[:4], 1.0, 0.0)
        jj.joint_select_embeddings(learner, short, 2, n_chunks=1, seed=0)
    with pytest.raises(TypeError, match="scores must have a real floating dtype"):
        jj.joint_select(jnp.zeros((3, 3), dtype=jnp.int32), 1, n_chunks=1, greedy=True)
    with pytest.raises(ValueError, match="scores must be a square"):
        jj.joint_select(jnp.zeros((3, 4)), 1, n_chunks=1, greedy=True)
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 3\)"):
        jj.joint_select(jnp.zeros((3, 3)), 2, n_chunks=2, noise=jnp.zeros((3,)))


# ----------------------------------------------------------------------------- state and selector


def test_selector_steps_select_with_fold_in_of_seed_and_step():
    selector = jj.JESTSelector(filter_ratio=0.75, n_chunks=3)
    state = selector.init(2024)
    step = jax.jit(selector.select)
    for t in range(3):
        models = float32_models(t, 24)
        idx, state = step(state, *map(on_jax, models))
        seed = fold_in(2024, t)
        expected = jestcore.joint_select_embeddings(*models, 6, n_chunks=3, seed=seed)
        noise = gumbel_noise(seed, (3, 24), xp=np)
        assert_same_embeddings_selection(idx, expected, models, "learnability", 6, 3, noise)
    assert int(state.step) == 3
    assert step._cache_size() == 1


def test_a_resumed_run_selects_exactly_what_an_uninterrupted_run_does(tmp_path):
    selector = jj.JESTSelector(batch_size=5, n_chunks=2, score="hard_learner")

    @jax.jit
    def train_step(carry, learner):
        state, total = carry
        idx, state = selector.select(state, learner, None)
        return (state, total + jnp.sum(idx)), idx

    data = [on_jax(float32_models(t, 20)[0]) for t in range(6)]

    def run(carry, steps):
        picks = []
        for t in steps:
            carry, idx = train_step(carry, data[t])
            picks.append(np.asarray(idx))
        return carry, picks

    start = (selector.init(7), jnp.zeros((), jnp.int32))
    _, uninterrupted = run(start, range(6))

    carry, first = run(start, range(3))
    # checkpoint the pytree (what Orbax does, here with numpy): leaves by position
    leaves, treedef = jax.tree.flatten(carry)
    np.savez(tmp_path / "ckpt.npz", *[np.asarray(x) for x in leaves])
    with np.load(tmp_path / "ckpt.npz") as f:
        restored = [jnp.asarray(f[f"arr_{i}"]) for i in range(len(leaves))]
    carry = jax.tree.unflatten(treedef, restored)
    assert isinstance(carry[0], jj.SelectionState)
    _, second = run(carry, range(3, 6))

    for t, (a, b) in enumerate(zip(uninterrupted, first + second, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"step {t}")
    # and the steps really differ from each other (the state advances)
    assert len({tuple(p.tolist()) for p in uninterrupted}) == 6


def test_selector_configuration_is_checked():
    with pytest.raises(ValueError, match="exactly one of batch_size and filter_ratio"):
        jj.JESTSelector()
    with pytest.raises(ValueError, match="exactly one of batch_size and filter_ratio"):
        jj.JESTSelector(batch_size=4, filter_ratio=0.5)
    with pytest.raises(ValueError, match=r"filter_ratio must be in \[0, 1\)"):
        jj.JESTSelector(filter_ratio=1.0)
    with pytest.raises(ValueError, match="score must be one of"):
        jj.JESTSelector(batch_size=4, score="loss")
    with pytest.raises(ValueError, match="scope must be one of"):
        jj.JESTSelector(batch_size=4, scope="everywhere")
    with pytest.raises(ValueError, match="batch_size must be between 1 and N = 4"):
        jj.JESTSelector(batch_size=5).n_select(4)
    with pytest.raises(TypeError, match="state must be a SelectionState"):
        jj.JESTSelector(batch_size=2).select((0, 0), *map(on_jax, float32_models(0, 4)))
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*32\)"):
        jj.init_state(-1)
    assert jj.JESTSelector(filter_ratio=0.8).n_select(1280) == 256
    assert jj.JESTSelector(filter_ratio=0.0).n_select(7) == 7
    selector = jj.JESTSelector(batch_size=3)
    assert hash(selector) == hash(dataclasses.replace(selector))


# ----------------------------------------------------------------------------- gathering


def test_gather_takes_the_same_rows_of_every_leaf():
    batch = {
        "image": jnp.arange(24.0).reshape(6, 2, 2),
        "meta": (jnp.arange(6), jnp.array([True, False] * 3)),
    }
    idx = jnp.array([4, 0, 5])
    for sub in (jj.gather(batch, idx), jax.jit(jj.gather)(batch, idx)):
        np.testing.assert_array_equal(sub["image"], np.arange(24.0).reshape(6, 2, 2)[[4, 0, 5]])
        np.testing.assert_array_equal(sub["meta"][0], [4, 0, 5])
        np.testing.assert_array_equal(sub["meta"][1], [True, True, False])


def test_selector_select_batch_returns_the_gathered_sub_batch():
    selector = jj.JESTSelector(batch_size=4, n_chunks=2)
    models = tuple(map(on_jax, float32_models(9, 16)))
    batch = {"id": jnp.arange(16) * 10, "x": jnp.ones((16, 3))}
    sub, idx, state = jax.jit(selector.select_batch)(selector.init(1), batch, *models)
    seed = fold_in(1, 0)
    expected = jestcore.joint_select_embeddings(*float32_models(9, 16), 4, n_chunks=2, seed=seed)
    noise = gumbel_noise(seed, (2, 16), xp=np)
    assert_same_embeddings_selection(
        idx, expected, float32_models(9, 16), "learnability", 4, 2, noise
    )
    np.testing.assert_array_equal(sub["id"], np.asarray(idx) * 10)
    assert sub["x"].shape == (4, 3) and int(state.step) == 1


def test_gather_refuses_bad_batches_and_indices():
    with pytest.raises(ValueError, match="same leading size"):
        jj.gather({"a": jnp.zeros(3), "b": jnp.zeros(4)}, jnp.array([0]))
    with pytest.raises(TypeError, match=r"batch\['a'\] must be an array, got int"):
        jj.gather({"a": 3}, jnp.array([0]))
    with pytest.raises(ValueError, match="must have a leading batch axis"):
        jj.gather((jnp.zeros(3), jnp.zeros(())), jnp.array([0]))
    with pytest.raises(TypeError, match="indices must be a 1-D integer array"):
        jj.gather(jnp.zeros(3), jnp.array([0.0]))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\)"):
        jj.gather(jnp.zeros(3), jnp.array([0, 3]))


@pytest.mark.parametrize(
    "name",
    [
        "jestcore.adapters.jax.selection",
        "jestcore.adapters.jax.state",
        "jestcore.adapters.jax.trees",
    ],
)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


# ----------------------------------------------------------------------------- one rule, one spec

FILTER_GRID = [(n, f) for n in (1, 2, 5, 9, 10, 16, 37) for f in (0.0, 0.5, 0.75, 0.8, 0.9)]


@pytest.mark.parametrize(("n", "f"), FILTER_GRID)
def test_selector_sub_batch_sizes_are_the_spec_rule(n, f):
    selector = jj.JESTSelector(filter_ratio=f, n_chunks=1)
    assert selector.n_select(n) == jestcore.sub_batch_size(n, filter_ratio=f)


@pytest.mark.parametrize(("n", "f"), [(10, 0.75), (9, 0.8), (16, 0.5), (37, 0.9), (20, 0.0)])
def test_selector_selects_what_the_spec_selects(n, f):
    # 10 * (1 - 0.75) = 2.5 rounds up to 3 (round() of Python would give 2)
    models = float32_models(n, n)
    b = jestcore.sub_batch_size(n, filter_ratio=f)
    n_chunks = min(2, b)
    selector = jj.JESTSelector(filter_ratio=f, n_chunks=n_chunks)
    state = selector.init(7)
    for step in range(2):
        idx, state = jax.jit(selector.select)(state, *map(on_jax, models))
        seed = fold_in(7, step)
        expected = jestcore.joint_select_embeddings(*models, b, n_chunks=n_chunks, seed=seed)
        noise = gumbel_noise(seed, (n_chunks, n), xp=np)
        assert idx.shape == (b,)
        assert_same_embeddings_selection(idx, expected, models, "learnability", b, n_chunks, noise)


def test_float64_numpy_beyond_float32_range_is_refused_saying_why():
    learner, reference = float32_models(0, 8)
    big = learner.image.astype(np.float64)
    big[2, 3] = 1e39  # finite in float64, infinite in float32
    with pytest.raises(
        ValueError,
        match=r"learner.image must fit in float32 .* learner.image\[2, 3\] is 1e\+39: JAX conv",
    ):
        jj.joint_select_embeddings(learner._replace(image=big), reference, 4, n_chunks=2, seed=0)
    scores = np.zeros((4, 4))
    scores[1, 0] = -1e39
    with pytest.raises(ValueError, match=r"scores\[1, 0\] is -1e\+39"):
        jj.joint_select(scores, 2, n_chunks=1, seed=0)
    # within float32's range, float64 NumPy input is accepted (and rounded to float32)
    ok = learner._replace(image=learner.image.astype(np.float64))
    got = jj.joint_select_embeddings(ok, reference, 4, n_chunks=2, seed=0)
    np.testing.assert_array_equal(
        got, jj.joint_select_embeddings(learner, reference, 4, n_chunks=2, seed=0)
    )


def test_selector_score_that_is_not_a_string_is_a_type_error():
    with pytest.raises(TypeError, match="score must be a str"):
        jj.JESTSelector(batch_size=2, score=["learnability"])
    learner, reference = map(on_jax, float32_models(0, 8))
    with pytest.raises(TypeError, match="score must be a str"):
        jj.joint_select_embeddings(learner, reference, 2, score=["learnability"], seed=0)
