"""The JAX backend, and the specification under ``jax.jit``: one compilation, NumPy's selections.

Inputs are built in NumPy; the jitted spec runs on JAX and is compared with the same function
on NumPy (near-tie tolerant, via ``helpers.assert_same_selection``) and with literal oracles.
"""

from __future__ import annotations

import array_api_compat
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
from jestcore.backends import get_backend, get_backend_module

import jestcore
from jestcore import PairEmbeddings, gumbel_noise

jb = get_backend_module("jax")
SCORES = ["learnability", "hard_learner", "easy_reference"]


def literal_top_k(x: np.ndarray, k: int) -> list[int]:
    return sorted(range(x.shape[0]), key=lambda i: (-float(x[i]), i))[:k]


def test_registry_picks_the_jax_module():
    assert get_backend(array_api_compat.array_namespace(jnp.zeros(1))) is jb
    assert get_backend(jnp) is jb


# ----------------------------------------------------------------------------- top_k

values = st.one_of(
    st.integers(-2, 2).map(float),  # many ties
    st.sampled_from([0.0, -0.0, -np.inf, float(-np.finfo(np.float32).max)]),
    st.floats(-1e6, 1e6, width=32),
)


@settings(max_examples=25)
@given(st.lists(values, min_size=1, max_size=12), st.data())
def test_top_k_matches_a_literal_sort_eagerly_and_under_jit(xs, data):
    x = np.asarray(xs, dtype=np.float32)
    k = data.draw(st.integers(1, x.shape[0]))
    expected = literal_top_k(x, k)
    eager = jb.top_k(jnp.asarray(x), k)
    jitted = jax.jit(jb.top_k, static_argnums=1)(jnp.asarray(x), k)
    assert isinstance(eager, jax.Array) and eager.dtype == jnp.int32
    assert np.asarray(eager).tolist() == expected
    assert np.asarray(jitted).tolist() == expected


def test_top_k_ties_both_zeros_and_goes_to_the_lower_index():
    # lax.top_k orders floats totally (-0.0 below +0.0); the backend must tie them, as NumPy does.
    x = np.array([0.0, -0.0, 0.0, -0.0, 1.0, -np.inf, 1.0], dtype=np.float32)
    expected = [4, 6, 0, 1, 2, 3, 5]
    assert np.asarray(jb.top_k(jnp.asarray(x), 7)).tolist() == expected
    assert get_backend_module("numpy").top_k(x, 7).tolist() == expected


def test_top_k_index_dtype_follows_x64():
    x = jnp.arange(5.0)
    assert jb.top_k(x, 2).dtype == jnp.int32
    with jax.enable_x64(True):
        x64 = jnp.arange(5.0, dtype=jnp.float64)
        got = jb.top_k(x64, 2)
        assert got.dtype == jnp.int64
        assert np.asarray(got).tolist() == [4, 3]


# ----------------------------------------------------------------------------- softplus


def literal_softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, np.asarray(x, dtype=np.float64))


def test_softplus_and_sum_softplus_match_float64_literals():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(scale=30.0, size=500), [-1e4, -200.0, 0.0, 50.0, 1e4]])
    got = np.asarray(jb.softplus(jnp.asarray(x, dtype=jnp.float32)), dtype=np.float64)
    # float32: a few ulp of relative error; atol = the smallest normal (exp(-1e4) underflows).
    np.testing.assert_allclose(got, literal_softplus(x.astype(np.float32)), rtol=1e-6, atol=2e-38)
    m = rng.normal(size=(7, 40)).astype(np.float32)
    scale, bias = np.float32(10.0), np.float32(-5.0)
    expected = literal_softplus(np.float64(scale) * m + np.float64(bias)).sum(axis=0)
    got = jax.jit(jb.sum_softplus)(jnp.asarray(m), jnp.asarray(scale), jnp.asarray(bias))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
    with jax.enable_x64(True):
        got64 = jb.sum_softplus(jnp.asarray(m, dtype=jnp.float64), 10.0, -5.0)
        assert got64.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(got64), expected, rtol=1e-13)


def test_is_lazy_only_for_tracers():
    seen = []

    def probe(x):
        seen.append(jb.is_lazy(x))
        return x

    assert not jb.is_lazy(jnp.zeros(3))
    assert not jb.is_lazy(np.zeros(3))
    jax.jit(probe)(jnp.zeros(3))
    jax.vmap(probe)(jnp.zeros((2, 3)))
    jax.grad(lambda x: jnp.sum(probe(x)))(jnp.zeros(3))
    assert seen == [True, True, True]


# ----------------------------------------------------------------------------- the spec, jitted


def on_jax(model: PairEmbeddings | None) -> PairEmbeddings | None:
    return None if model is None else PairEmbeddings(*(jnp.asarray(x) for x in model))


def assert_same_as_numpy_embeddings(
    got, expected, learner, reference, score, n_select, n_chunks, seed, gain=100.0
):
    """Near-tie tolerant comparison of two selections from the same float32 embeddings.

    ``gain`` is the one both selections used (the default).
    """
    noise = None if seed is None else gumbel_noise(seed, (n_chunks, learner.image.shape[0]), xp=np)
    assert_same_embeddings_selection(
        got, expected, (learner, reference), score, n_select, n_chunks, noise, gain=gain
    )


STATIC = ("n_select", "n_chunks", "score", "greedy")
SPEC_EMBEDDINGS = jax.jit(jestcore.joint_select_embeddings, static_argnames=STATIC)
SPEC_MATRIX = jax.jit(jestcore.joint_select, static_argnames=("n_select", "n_chunks", "gain"))
SPEC_INDEPENDENT = jax.jit(jestcore.independent_select, static_argnames=("n_select", "greedy"))


def test_spec_compiles_once_for_many_seeds_data_scales_and_biases():
    traces = []

    def select(learner, reference, seed):
        traces.append(1)
        return jestcore.joint_select_embeddings(learner, reference, 10, n_chunks=4, seed=seed)

    jitted = jax.jit(select)
    for step in range(6):
        learner, reference = float32_models(step, 40)
        seed = 1000 + 7 * step
        got = jitted(on_jax(learner), on_jax(reference), jnp.uint32(seed))
        assert isinstance(got, jax.Array) and got.dtype == jnp.int32
        expected = jestcore.joint_select_embeddings(learner, reference, 10, n_chunks=4, seed=seed)
        assert_same_as_numpy_embeddings(
            got, expected, learner, reference, "learnability", 10, 4, seed
        )
    assert len(traces) == 1
    assert jitted._cache_size() == 1


def test_the_near_tie_comparison_can_fail():
    learner, reference = float32_models(0, 40)
    # At gain 1 two seeds draw different selections (at the default 100 these nearly agree).
    call = {"n_chunks": 4, "gain": 1.0}
    jitted = jax.jit(lambda a, b, s: jestcore.joint_select_embeddings(a, b, 10, seed=s, **call))
    got = jitted(on_jax(learner), on_jax(reference), jnp.uint32(1))
    other = jestcore.joint_select_embeddings(learner, reference, 10, seed=2, **call)
    with pytest.raises(AssertionError, match="exceeds the near-tie tolerance"):
        assert_same_as_numpy_embeddings(
            got, other, learner, reference, "learnability", 10, 4, 2, gain=1.0
        )


@st.composite
def problems(draw: st.DrawFn):
    n = draw(st.sampled_from([12, 24]))  # few shapes: each new one compiles
    n_select = draw(st.integers(1, n))
    n_chunks = draw(st.integers(1, min(n_select, 6)))
    seed = draw(st.one_of(st.none(), st.integers(0, 2**32 - 1)))
    return n, n_select, n_chunks, draw(st.sampled_from(SCORES)), seed, draw(st.integers(0, 99))


@settings(max_examples=12)
@given(problems())
@example((24, 13, 4, "learnability", 2**32 - 1, 0))  # 13 % 4 != 0
@example((12, 12, 12, "hard_learner", None, 1))  # greedy, chunks of one
def test_spec_under_jit_selects_what_numpy_selects(problem):
    n, n_select, n_chunks, score, seed, data_seed = problem
    learner, reference = needed(*float32_models(data_seed, n), score)
    randomness = {"greedy": True} if seed is None else {"seed": jnp.uint32(seed)}
    got = SPEC_EMBEDDINGS(
        on_jax(learner), on_jax(reference), n_select, n_chunks=n_chunks, score=score, **randomness
    )
    expected = jestcore.joint_select_embeddings(
        learner,
        reference,
        n_select,
        n_chunks=n_chunks,
        score=score,
        **({"greedy": True} if seed is None else {"seed": seed}),
    )
    full = float32_models(data_seed, n)
    assert_same_as_numpy_embeddings(got, expected, *full, score, n_select, n_chunks, seed)


@settings(max_examples=10)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 9),
    st.integers(1, 4),
    st.sampled_from([1.0, 3.5, 100.0]),
)
def test_spec_joint_select_on_a_matrix_under_jit_matches_numpy_and_the_oracle(
    seed, n_select, n_chunks, gain
):
    n = 16
    n_chunks = min(n_chunks, n_select)
    s = np.random.default_rng(seed % 1000).standard_normal((n, n)).astype(np.float32)
    call = {"n_chunks": n_chunks, "gain": gain}
    got = SPEC_MATRIX(jnp.asarray(s), n_select, seed=jnp.uint32(seed), **call)
    noise = gumbel_noise(seed, (n_chunks, n), xp=np)
    expected = oracle.select(
        s.astype(np.float64), n_select, n_chunks, noise.astype(np.float64), gain=gain
    )
    assert_same_selection(
        got,
        expected,
        sizes=oracle.split_chunks(n_select, n_chunks),
        n=n,
        perturbed=joint_perturbed(s, noise, gain=gain),
        rtol=RTOL["float32"],
    )
    np.testing.assert_array_equal(got, jestcore.joint_select(s, n_select, seed=seed, **call))


def test_spec_under_jit_with_x64_matches_numpy_float64():
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        x = rng.standard_normal((4, 30, 5))
        learner = PairEmbeddings(x[0], x[1], 10.0, -5.0)
        reference = PairEmbeddings(x[2], x[3], np.float64(3.0), np.float64(-1.0))
        got = SPEC_EMBEDDINGS(
            on_jax(learner), on_jax(reference), 11, n_chunks=3, seed=jnp.uint64(2**40 + 5)
        )
        assert got.dtype == jnp.int64
        # a 0-d array seed uses its low 32 bits
        expected = jestcore.joint_select_embeddings(learner, reference, 11, n_chunks=3, seed=5)
        noise = gumbel_noise(5, (3, 30), xp=np)
        assert_same_embeddings_selection(
            got, expected, (learner, reference), "learnability", 11, 3, noise, rtol=RTOL["float64"]
        )


def test_non_finite_candidates_rank_after_every_finite_one_under_jit():
    scores = np.array([1.0, np.nan, 3.0, np.inf, -np.inf, 2.0, np.nan, 0.5], dtype=np.float32)
    with pytest.raises(ValueError, match=r"scores must be finite, but scores\[1\] is nan"):
        jestcore.independent_select(jnp.asarray(scores), 3, greedy=True)
    fn = SPEC_INDEPENDENT
    # finite ones by score, then the non-finite ones (all ranked alike) by index
    assert np.asarray(fn(jnp.asarray(scores), 8, greedy=True)).tolist() == [2, 5, 0, 7, 1, 3, 4, 6]
    seeded = np.asarray(fn(jnp.asarray(scores), 8, seed=jnp.uint32(9)))
    assert sorted(seeded[:4].tolist()) == [0, 2, 5, 7]
    assert seeded[4:].tolist() == [1, 3, 4, 6]


# ----------------------------------------------------------------------------- compiled loops


def _equations(jaxpr) -> int:
    """Equations of a jaxpr, counting those of every sub-jaxpr (scan bodies, inner jits...)."""
    count = 0
    for eqn in jaxpr.eqns:
        count += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, list | tuple) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    count += _equations(inner)
    return count


def _random_models(n: int) -> tuple[PairEmbeddings, PairEmbeddings]:
    rng = np.random.default_rng(n)
    x = jnp.asarray(rng.standard_normal((4, n, 4)), dtype=jnp.float32)
    return PairEmbeddings(x[0], x[1], 1.0, 0.0), PairEmbeddings(x[2], x[3], 5.0, -1.0)


@pytest.mark.parametrize(
    "select",
    [jestcore.joint_select_embeddings, jj.joint_select_embeddings],
    ids=["spec", "adapter"],
)
def test_the_compiled_program_does_not_grow_with_chunks_or_blocks(select):
    # Deterministic stand-in for compile time: the traced program (scan bodies included) of
    # the same selection with 2..32 chunks and blocks of 1 row up to the whole chunk stays
    # within one or two traced chunk bodies. An unrolled loop grows with n_chunks and with
    # rows / block_size (block_size=1 at N = 256, 2 chunks: 64 copies of a block).
    counts = {}
    for n in (64, 256):
        learner, reference = _random_models(n)
        for n_chunks in (2, 8, 32):
            for block_size in (1, 5, None):

                def fn(learner, reference, seed, n=n, n_chunks=n_chunks, block_size=block_size):
                    return select(
                        learner, reference, n // 2, n_chunks=n_chunks, seed=seed,
                        block_size=block_size,
                    )  # fmt: skip

                jaxpr = jax.make_jaxpr(fn)(learner, reference, jnp.uint32(0))
                counts[n, n_chunks, block_size] = _equations(jaxpr.jaxpr)
    assert max(counts.values()) <= 1.5 * min(counts.values()), counts


def test_the_default_blocks_bound_xlas_temporaries_under_jit():
    # XLA keeps several block-sized temporaries alive, so the JAX default block is a quarter
    # of the others' (2**23 elements): at N = 65,536 (chunks of 819 rows) 128-row blocks, and
    # a plan far below that of the 2**25-element blocks (512 rows). Compiled only, not run.
    n, d = 65536, 8
    model = PairEmbeddings(jnp.ones((n, d)), jnp.ones((n, d)), 10.0, -10.0)

    def temporaries(block_size):
        fn = jax.jit(lambda m, s: jestcore.joint_select_embeddings(
            m, m, n // 5, seed=s, block_size=block_size))  # fmt: skip
        compiled = fn.lower(model, jnp.uint32(0)).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    jb, numpy_backend = get_backend_module("jax"), get_backend_module("numpy")
    assert jb.default_block_size(n) == 128 and numpy_backend.default_block_size(n) == 512
    default, generic_default = temporaries(None), temporaries(numpy_backend.default_block_size(n))
    assert default == temporaries(128)  # None is the backend's default
    assert default < 0.3 * generic_default, (default, generic_default)
    assert default < 8 * 128 * n * 4  # a few blocks of float32 products, not more


def test_chunk_loop_under_jit_matches_the_plain_loop():
    generic = get_backend_module("generic")
    x = np.random.default_rng(0).standard_normal(37).astype(np.float32)
    noise = np.random.default_rng(1).standard_normal((5, 37)).astype(np.float32)
    sizes = (3, 3, 2, 2, 1)  # two runs of equal sizes, then the last chunk

    def run(module, x, noise):
        xp = array_api_compat.array_namespace(x)
        positions = xp.arange(x.shape[0])

        def choose(carry, g, size):
            return module.top_k(carry if g is None else carry + g, size)

        def advance(carry, idx):  # drop the picks; shift the rest by their (integer) sum
            hit = xp.any(positions[:, None] == idx[None, :], axis=1)
            return xp.where(hit, carry - 1e3, carry + xp.astype(xp.sum(idx) % 3, carry.dtype))

        return module.chunk_loop(choose, advance, x, sizes, noise)

    expected = run(generic, x, noise)
    assert len(set(expected.tolist())) == sum(sizes)
    eager = run(jb, jnp.asarray(x), jnp.asarray(noise))
    jitted = jax.jit(lambda x, g: run(jb, x, g))(jnp.asarray(x), jnp.asarray(noise))
    np.testing.assert_array_equal(np.asarray(eager), expected)
    np.testing.assert_array_equal(np.asarray(jitted), expected)
    greedy = jax.jit(lambda x: run(jb, x, None))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(greedy), run(generic, x, None))


@pytest.mark.parametrize("c", [1, 2, 7, 10, 12])
@pytest.mark.parametrize("block_size", [1, 3, 4, 20])
def test_block_loop_visits_nearly_equal_blocks_in_order_on_jax_and_generic(c, block_size):
    idx = np.arange(10, 10 + c)
    seen = []
    get_backend_module("generic").block_loop(
        lambda acc, b: seen.append(b.tolist()) or acc, 0, idx, block_size
    )
    assert [i for b in seen for i in b] == idx.tolist()
    lengths = [len(b) for b in seen]
    assert max(lengths) <= block_size
    assert len(seen) == -(-c // block_size)  # as few blocks as the bound allows
    assert set(lengths[:-1]) <= {lengths[0]} and lengths[-1] <= lengths[0]

    def digest(acc, b):  # integer and order-dependent: a bitwise contract
        return acc * 2 + b[0] * 16 + b.shape[0]

    expected = 0
    for b in seen:
        expected = expected * 2 + b[0] * 16 + len(b)
    got = jax.jit(lambda i: jb.block_loop(digest, jnp.int32(0), i, block_size))(jnp.asarray(idx))
    assert int(got) == expected


def test_joint_select_on_a_matrix_traces_one_chunk_whatever_n_chunks():
    scores = jnp.asarray(np.random.default_rng(0).standard_normal((64, 64)), dtype=jnp.float32)
    counts = {}
    for n_chunks in (2, 8, 32):
        for select in (jestcore.joint_select, jj.joint_select):

            def fn(s, seed, n_chunks=n_chunks, select=select):
                return select(s, 32, n_chunks=n_chunks, seed=seed)

            jaxpr = jax.make_jaxpr(fn)(scores, jnp.uint32(0))
            counts[select.__module__, n_chunks] = _equations(jaxpr.jaxpr)
    assert max(counts.values()) <= 1.5 * min(counts.values()), counts
