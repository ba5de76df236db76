"""The portable counter-based generator: uniformity, independence, portability, seeds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from jestcore import fold_in, gumbel_noise, joint_select, uniform

N_DRAWS = 2**17  # >= 1e5 draws per statistical test


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**32 - 1])
def test_uniforms_are_uniform_ks(seed):
    u = uniform(seed, (N_DRAWS,), xp=np)
    assert u.dtype == np.float32
    assert u.min() > 0.0 and u.max() < 1.0
    # Fixed seeds: deterministic. A uniform generator passes at 1e-3 in 999 cases of 1000.
    assert stats.kstest(u.astype(np.float64), "uniform").pvalue > 1e-3


@pytest.mark.parametrize("seed", [7, 2**31 + 5])
def test_uniform_bits_are_uniform_chi_square(seed):
    # The 23 bits of resolution: chi-square of the top 8 and the bottom 8 bits over 256 bins.
    u = uniform(seed, (4, N_DRAWS // 4), xp=np).reshape(-1)
    k = (u.astype(np.float64) * 2**23 - 0.5).astype(np.int64)
    np.testing.assert_array_equal((k + 0.5) / 2**23, u)  # exactly the documented grid
    for bits in (k >> 15, k & 255):
        counts = np.bincount(bits, minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-3


def test_gumbel_noise_is_standard_gumbel():
    g = gumbel_noise(3, (N_DRAWS,), xp=np)
    assert g.dtype == np.float32
    assert np.isfinite(g).all()
    assert stats.kstest(g.astype(np.float64), "gumbel_r").pvalue > 1e-3
    # and it is -log(-log(u)) of the same seed's uniforms
    u = uniform(3, (N_DRAWS,), xp=np).astype(np.float64)
    np.testing.assert_allclose(g, -np.log(-np.log(u)), rtol=1e-5, atol=1e-6)


def _corr(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64), np.asarray(b, np.float64))[0, 1])


def test_rows_seeds_and_neighbours_are_uncorrelated():
    n = 2**16
    bound = 5 / np.sqrt(n)  # five standard errors of a correlation of independent samples
    rows = uniform(0, (3, n), xp=np)
    pairs = [
        (rows[0], rows[1]),
        (rows[1], rows[2]),
        (uniform(0, (n,), xp=np), uniform(1, (n,), xp=np)),
        (uniform(2**31, (n,), xp=np), uniform(2**31 + 1, (n,), xp=np)),
        (uniform(fold_in(9, 0), (n,), xp=np), uniform(fold_in(9, 1), (n,), xp=np)),
        (rows[0][:-1], rows[0][1:]),  # serial correlation within a row
    ]
    for a, b in pairs:
        assert abs(_corr(a, b)) < bound
    # Many seeds: the first draw of consecutive seeds is itself uniform and uncorrelated.
    first = np.array([uniform(s, (1,), xp=np)[0] for s in range(4000)], dtype=np.float64)
    assert stats.kstest(first, "uniform").pvalue > 1e-3
    assert abs(_corr(first[:-1], first[1:])) < 5 / np.sqrt(4000)


def test_row_zero_of_a_2d_draw_is_the_1d_draw():
    # bitwise for the uniforms (integer hashing); the noise is a float32 log of arrays of two
    # shapes, which vectorised and scalar code paths may round differently
    np.testing.assert_array_equal(uniform(5, (3, 100), xp=np)[0], uniform(5, (100,), xp=np))
    g = gumbel_noise(5, (100,), xp=np)
    np.testing.assert_allclose(
        gumbel_noise(5, (3, 100), xp=np)[0], g, rtol=0, atol=GUMBEL_BOUND * np.abs(g).max()
    )
    # a longer row extends a shorter one (counter-based)
    np.testing.assert_array_equal(uniform(5, (2, 300), xp=np)[:, :100], uniform(5, (2, 100), xp=np))


def test_same_seed_same_draws_different_seed_different_draws():
    np.testing.assert_array_equal(uniform(42, (1000,), xp=np), uniform(42, (1000,), xp=np))
    assert not np.array_equal(uniform(42, (1000,), xp=np), uniform(43, (1000,), xp=np))


def test_uniforms_are_bit_identical_on_every_backend(xp):
    for seed in (0, 17, 2**31 - 1, 2**31, 2**32 - 1):
        ref = uniform(seed, (3, 1000), xp=np)
        got = uniform(seed, (3, 1000), xp=xp)
        # bitwise: integer hashing and an exact int -> float32 conversion, no rounding anywhere
        np.testing.assert_array_equal(xp.to_numpy(got), ref)


#: The documented bound on |Gumbel noise of a namespace - the exact -log(-log(u))|, in units of
#: 2**-23 * max(1, |g|): absolute near 0, where -log(-log(u)) cancels, relative beyond.
GUMBEL_BOUND = 2.0**-21


def test_gumbel_noise_is_within_the_documented_bound_on_every_backend(xp):
    # 16 seeds x 4 x 8192 = 524,288 draws per backend. The uniforms are bit-identical; only the
    # frameworks' float32 log differs, so noise may differ near 0 by far more than a few ulp of g.
    for seed in range(0, 2**32, 2**28):
        u = uniform(seed, (4, 8192), xp=np).astype(np.float64)
        exact = -np.log(-np.log(u))
        got = xp.to_numpy(gumbel_noise(seed, (4, 8192), xp=xp))
        assert got.dtype == np.float32
        bound = GUMBEL_BOUND * np.maximum(1.0, np.abs(exact))
        err = np.abs(got - exact)
        assert np.all(err <= bound), (seed, float(np.max(err / bound)))
        # and so two namespaces agree to twice the bound, e.g. 1e-6 absolute for |g| <= 1
        ref = gumbel_noise(seed, (4, 8192), xp=np)
        assert np.all(np.abs(got - ref) <= 2 * bound)


def test_array_seeds_equal_int_seeds_on_every_backend(xp):
    cases = [(12, np.int32), (12, np.int64), (2**31 - 1, np.int32), (2**31 + 3, np.int64)]
    cases += [(2**32 - 1, np.uint32), (7, np.uint8)]
    if xp.name == "jax":  # x64 off: no int64 arrays in JAX
        cases = [(s, t) for s, t in cases if t is not np.int64]
    for seed, dtype in cases:
        array_seed = xp.from_numpy(np.asarray(seed, dtype=dtype))
        assert array_seed.ndim == 0
        # bitwise: the same seed gives the same integers, hence the same uniforms
        np.testing.assert_array_equal(
            xp.to_numpy(uniform(array_seed, (2, 50), xp=xp)), uniform(seed, (2, 50), xp=np)
        )


def test_concrete_array_seeds_follow_the_int_rule_on_every_backend(xp):
    # One rule: a seed whose value can be read must lie in [0, 2**32), whatever its type.
    bad = [(-1, np.int32), (-(2**31), np.int32)]
    if xp.name != "jax":  # 64-bit integers need JAX's x64 mode
        bad += [(2**32, np.int64), (2**40 + 9, np.int64), (-1, np.int64)]
    for value, dtype in bad:
        seed = xp.from_numpy(np.asarray(value, dtype=dtype))
        for call in (
            lambda s=seed: uniform(s, (4,), xp=xp),
            lambda s=seed: gumbel_noise(s, (4,), xp=xp),
            lambda s=seed: fold_in(s, 1),
        ):
            with pytest.raises(ValueError, match=rf"seed must be an int in .*, got {value}$"):
                call()


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint64])
def test_numpy_integer_seeds_follow_the_int_rule(dtype):
    # np.int64(2**32) used to be seed 0 while 2**32 raised
    info = np.iinfo(dtype)
    for value in {2**32, -1, info.min, info.max} - {2**32 - 1}:
        if info.min <= value <= info.max and not 0 <= value < 2**32:
            with pytest.raises(ValueError, match=rf"seed must be an int in .*, got {value}$"):
                uniform(dtype(value), (4,), xp=np)
            with pytest.raises(ValueError, match=r"seed must be an int in"):
                joint_select(np.eye(3), 1, n_chunks=1, seed=dtype(value))
    for value in (0, 5, 2**31 - 1) + ((2**32 - 1,) if info.max >= 2**32 - 1 else ()):
        np.testing.assert_array_equal(
            uniform(dtype(value), (30,), xp=np), uniform(value, (30,), xp=np)
        )


def test_traced_seeds_use_their_low_32_bits():
    # Under jax.jit the value cannot be read: the low 32 bits are the seed, as documented.
    import jax
    import jax.numpy as jnp

    draw = jax.jit(lambda s: uniform(s, (40,), xp=jnp))
    np.testing.assert_array_equal(
        np.asarray(draw(jnp.asarray(-1, dtype=jnp.int32))), uniform(2**32 - 1, (40,), xp=np)
    )
    folded = jax.jit(lambda s: fold_in(s, 3))(jnp.asarray(-1, dtype=jnp.int32))
    assert int(folded) == fold_in(2**32 - 1, 3)


def test_fold_in_int_and_array_agree_on_every_backend(xp):
    for seed, data in [(0, 0), (5, 7), (2**32 - 1, 3), (123, 2**31 + 9)]:
        expected = fold_in(seed, data)
        assert isinstance(expected, int) and 0 <= expected < 2**32
        seed_dtype = np.int32 if seed < 2**31 else np.uint32
        for args in [
            (xp.from_numpy(np.asarray(seed, dtype=seed_dtype)), data),
            (seed, xp.from_numpy(np.asarray(data, dtype=np.int64).astype(np.int32))),
        ]:
            got = fold_in(*args)
            assert got.ndim == 0
            # the same value, as a uint32 array: a valid (concrete) seed on every namespace
            out = xp.to_numpy(got)
            assert out.dtype == np.uint32 and int(out) == expected
            # and as a seed it draws exactly what the int seed draws (bitwise: integer hashing)
            np.testing.assert_array_equal(
                xp.to_numpy(uniform(got, (60,), xp=xp)), uniform(expected, (60,), xp=np)
            )


def test_fold_in_data_arrays_of_any_value_use_their_low_32_bits():
    # data is a counter, not a seed: any value, its low 32 bits (as for Python ints)
    for data, low in [(-1, 2**32 - 1), (2**40 + 3, 3), (2**32, 0)]:
        expected = fold_in(5, low)
        assert fold_in(5, data) == expected
        assert int(fold_in(5, np.asarray(data, dtype=np.int64))) == expected
        assert int(fold_in(np.asarray(5), np.int64(data))) == expected


def test_fold_in_spreads_seeds():
    derived = {fold_in(0, t) for t in range(10000)}
    assert len(derived) == 10000
    assert len({fold_in(s, 0) for s in range(10000)}) == 10000
    assert fold_in(1, 2) != fold_in(2, 1)


def test_selection_is_identical_for_int_and_array_seeds():
    s = np.random.default_rng(0).standard_normal((30, 30))
    a = joint_select(s, 10, n_chunks=3, seed=77)
    np.testing.assert_array_equal(a, joint_select(s, 10, n_chunks=3, seed=np.asarray(77)))
    np.testing.assert_array_equal(
        a, joint_select(s, 10, n_chunks=3, seed=np.asarray(77, dtype=np.int32))
    )


@pytest.mark.parametrize(
    ("seed", "error"),
    [
        (-1, ValueError),
        (2**32, ValueError),
        (np.int64(2**32), ValueError),
        (np.int64(-1), ValueError),
        (np.asarray(2**32), ValueError),
        (np.asarray(-1, dtype=np.int32), ValueError),
        (1.5, TypeError),
        (True, TypeError),
        (None, TypeError),
        ("3", TypeError),
        (np.asarray([1, 2]), TypeError),
        (np.asarray(1.0), TypeError),
        (np.asarray(True), TypeError),
    ],
)
def test_invalid_seeds_raise(seed, error):
    for call in (
        lambda: uniform(seed, (4,), xp=np),
        lambda: gumbel_noise(seed, (4,), xp=np),
        lambda: fold_in(seed, 1),
    ):
        with pytest.raises(error, match="seed"):
            call()


@pytest.mark.parametrize("shape", [(), (2, 3, 4), (-1,), (2.0,), (3, -2)])
def test_invalid_shapes_raise(shape):
    with pytest.raises(ValueError, match="shape"):
        uniform(0, shape, xp=np)


def test_invalid_fold_in_data_raises():
    # data has no range: the message must not claim one
    for data in (True, 1.5, np.asarray([1, 2]), np.asarray(0.5), np.asarray(True)):
        for seed in (0, np.asarray(0)):
            with pytest.raises(TypeError, match=r"^data must be an int or a 0-d integer array"):
                fold_in(seed, data)
