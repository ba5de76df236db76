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
    np.testing.assert_array_equal(uniform(5, (3, 100), xp=np)[0], uniform(5, (100,), xp=np))
    np.testing.assert_array_equal(
        gumbel_noise(5, (3, 100), xp=np)[0], gumbel_noise(5, (100,), xp=np)
    )
    # a longer row extends a shorter one (counter-based)
    np.testing.assert_array_equal(uniform(5, (2, 300), xp=np)[:, :100], uniform(5, (2, 100), xp=np))


def test_same_seed_same_draws_different_seed_different_draws():
    np.testing.assert_array_equal(uniform(42, (1000,), xp=np), uniform(42, (1000,), xp=np))
    assert not np.array_equal(uniform(42, (1000,), xp=np), uniform(43, (1000,), xp=np))


def test_uniforms_are_bit_identical_on_every_backend(backend):
    for seed in (0, 17, 2**31 - 1, 2**31, 2**32 - 1):
        ref = uniform(seed, (3, 1000), xp=np)
        got = uniform(seed, (3, 1000), xp=backend.xp)
        np.testing.assert_array_equal(backend.to_numpy(got), ref)


def test_gumbel_noise_agrees_to_a_few_ulp_on_every_backend(backend):
    for seed in (0, 99, 2**32 - 1):
        ref = gumbel_noise(seed, (2, 2000), xp=np)
        got = backend.to_numpy(gumbel_noise(seed, (2, 2000), xp=backend.xp))
        assert got.dtype == np.float32
        # Frameworks' float32 log may differ in the last bit. -log(-log u) cancels near u = 1/e
        # (noise near 0), so the error is a few ulp of max(|g|, 1), not of g itself.
        ulp = np.spacing(np.maximum(np.abs(ref), np.float32(1)))
        assert np.all(np.abs(got - ref) <= 4 * ulp), np.max(np.abs(got - ref) / ulp)


def test_array_seeds_equal_int_seeds_on_every_backend(backend):
    xp = backend.xp
    cases = [(12, np.int32), (12, np.int64), (2**31 - 1, np.int32), (2**31 + 3, np.int64)]
    if backend.name == "jax":  # x64 off: no int64 arrays in JAX
        cases = [(s, t) for s, t in cases if t is np.int32]
    for seed, dtype in cases:
        array_seed = backend.asarray(np.asarray(seed, dtype=dtype))
        assert array_seed.ndim == 0
        np.testing.assert_array_equal(
            backend.to_numpy(uniform(array_seed, (2, 50), xp=xp)), uniform(seed, (2, 50), xp=np)
        )
    # only the low 32 bits of an array seed count: int32 -1 is the seed 2**32 - 1
    minus_one = backend.asarray(np.asarray(-1, dtype=np.int32))
    np.testing.assert_array_equal(
        backend.to_numpy(uniform(minus_one, (40,), xp=xp)),
        uniform(2**32 - 1, (40,), xp=np),
    )


def test_fold_in_int_and_array_agree_on_every_backend(backend):
    xp = backend.xp
    for seed, data in [(0, 0), (5, 7), (2**32 - 1, 3), (123, 2**31 + 9)]:
        expected = fold_in(seed, data)
        assert isinstance(expected, int) and 0 <= expected < 2**32
        for args in [
            (backend.asarray(np.asarray(seed % 2**31, dtype=np.int32)), data)
            if seed < 2**31
            else None,
            (seed, backend.asarray(np.asarray(data, dtype=np.int64).astype(np.int32))),
        ]:
            if args is None:
                continue
            got = fold_in(*args)
            assert got.ndim == 0
            # a bit pattern: its low 32 bits are the int result
            assert int(backend.to_numpy(got)) % 2**32 == expected
            # and as a seed it draws exactly what the int seed draws
            np.testing.assert_array_equal(
                backend.to_numpy(uniform(got, (60,), xp=xp)), uniform(expected, (60,), xp=np)
            )


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
    for data in (True, 1.5, np.asarray([1, 2]), np.asarray(0.5)):
        with pytest.raises(TypeError, match="data"):
            fold_in(0, data)
