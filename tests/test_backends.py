"""Backend modules: conformance, a lazy registry, and each primitive against a literal one."""

from __future__ import annotations

import importlib
import importlib.util
import inspect

import array_api_compat
import numpy as np
import pytest
from children import run_python
from helpers import to_namespace
from hypothesis import given
from hypothesis import strategies as st
from jestcore.backends import BACKEND_NAMES, get_backend, get_backend_module


def present_backends() -> list[str]:
    """Every module of BACKEND_NAMES that exists (native torch and jax modules once added)."""
    return [
        name
        for name in BACKEND_NAMES
        if importlib.util.find_spec(f"jestcore.backends.{name}") is not None
    ]


def public_names(module) -> set[str]:
    return {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and callable(obj)
        and getattr(obj, "__module__", None) == module.__name__
    }


def test_generic_and_numpy_are_present():
    assert {"generic", "numpy"} <= set(present_backends())


@pytest.mark.parametrize("name", present_backends())
def test_backend_modules_conform(name):
    generic = get_backend_module("generic")
    module = get_backend_module(name)
    assert set(module.__all__) == set(generic.__all__), name
    # Nothing public beyond the shared names (numpy and torch reuse generic's loops).
    assert public_names(module) <= set(generic.__all__), name
    for fn in generic.__all__:
        ours, theirs = getattr(module, fn), getattr(generic, fn)
        assert inspect.signature(ours) == inspect.signature(theirs), (name, fn)
        assert ours.__doc__, f"{name}.{fn} has no docstring"


def test_registry_picks_native_modules_and_falls_back_to_generic():
    import array_api_strict
    import torch

    assert get_backend(array_api_compat.array_namespace(np.zeros(1))) is get_backend_module("numpy")
    assert get_backend(array_api_strict) is get_backend_module("generic")
    torch_ns = array_api_compat.array_namespace(torch.zeros(1))
    expected = "torch" if "torch" in present_backends() else "generic"
    assert get_backend(torch_ns) is get_backend_module(expected)
    # the registry caches: the same module object every time
    assert get_backend(torch_ns) is get_backend(torch_ns)
    with pytest.raises(ValueError, match="name must be one of"):
        get_backend_module("tensorflow")


def literal_top_k(x: np.ndarray, k: int) -> list[int]:
    return sorted(range(x.shape[0]), key=lambda i: (-x[i], i))[:k]


values = st.one_of(
    st.integers(-3, 3).map(float),  # many ties
    st.just(-np.inf),
    st.just(float(-np.finfo(np.float32).max)),
    st.floats(-1e6, 1e6),
)


@given(st.lists(values, min_size=1, max_size=60), st.data(), st.sampled_from(["f4", "f8"]))
def test_numpy_and_generic_top_k_agree_with_a_literal_sort(xs, data, dtype):
    x = np.asarray(xs, dtype=dtype)
    k = data.draw(st.integers(1, x.shape[0]))
    expected = literal_top_k(x, k)
    np_idx = get_backend_module("numpy").top_k(x, k)
    gen_idx = get_backend_module("generic").top_k(array_api_compat.array_namespace(x).asarray(x), k)
    assert np.asarray(np_idx).tolist() == expected
    assert np.asarray(gen_idx).tolist() == expected


def test_numpy_top_k_partition_path_with_ties_at_the_cut():
    # k < n // 4 takes the argpartition path: ties straddling the k-th value go to lower indices.
    x = np.zeros(100)
    x[[90, 10, 50]] = 5.0
    x[-1] = -np.inf
    idx = get_backend_module("numpy").top_k(x, 7)
    assert idx.tolist() == [10, 50, 90, 0, 1, 2, 3]
    x = np.full(100, -np.inf)
    x[[3, 97]] = 1.0
    assert get_backend_module("numpy").top_k(x, 5).tolist() == [3, 97, 0, 1, 2]


def test_top_k_on_every_backend(backend):
    rng = np.random.default_rng(0)
    x = rng.integers(-4, 4, size=200).astype(np.float32)
    x[::7] = -np.inf
    module = get_backend(backend.xp)
    for k in (1, 10, 49, 50, 51, 200):
        got = backend.to_numpy(module.top_k(backend.asarray(x), k))
        assert got.tolist() == literal_top_k(x, k)


@pytest.mark.parametrize("name", present_backends())
def test_softplus_and_sum_softplus_are_stable(name):
    module = get_backend_module(name)
    dtypes = [np.float32, np.float64]
    if name == "jax":
        import jax

        if not jax.config.jax_enable_x64:  # no float64 arrays in JAX's default mode
            dtypes = [np.float32]
    for dtype in dtypes:
        x = np.concatenate([np.linspace(-1000, 1000, 2001), [-1e30, 0.0, 1e30]]).astype(dtype)
        x.flags.writeable = False  # inputs are never written to
        arr = to_namespace(name, x)
        got = as_numpy(module.softplus(arr))
        assert got.dtype == dtype
        expected = np.logaddexp(0.0, x.astype(np.float64))
        # atol: results below the smallest normal number may flush to zero (float32 x < -87)
        tiny = np.finfo(dtype).smallest_normal
        np.testing.assert_allclose(got, expected, rtol=4 * np.finfo(dtype).eps, atol=tiny)
        m = np.linspace(-2, 2, 60).reshape(6, 10).astype(dtype)
        got = as_numpy(module.sum_softplus(to_namespace(name, m), 100.0, -10.0))
        expected = np.logaddexp(0.0, 100.0 * m.astype(np.float64) - 10.0).sum(axis=0)
        np.testing.assert_allclose(got, expected, rtol=16 * np.finfo(dtype).eps)


def as_numpy(x) -> np.ndarray:
    if array_api_compat.is_torch_array(x):
        return x.numpy()
    return np.asarray(x)


def test_is_lazy():
    assert get_backend_module("numpy").is_lazy(np.zeros(3)) is False
    assert get_backend_module("generic").is_lazy(np.zeros(3)) is False
    import jax
    import jax.numpy as jnp

    seen = []

    @jax.jit
    def f(x):
        seen.append(get_backend(array_api_compat.array_namespace(x)).is_lazy(x))
        return x

    f(jnp.zeros(3))
    assert seen == [True]
    assert get_backend(jnp).is_lazy(jnp.zeros(3)) is False


def test_get_backend_imports_no_framework_that_was_not_imported():
    out = run_python(
        """
        import sys
        import array_api_compat, array_api_strict, numpy as np
        from jestcore.backends import get_backend
        get_backend(array_api_compat.array_namespace(np.zeros(1)))
        get_backend(array_api_strict)
        import jestcore
        jestcore.joint_select(np.eye(4), 2, n_chunks=2, seed=0)
        jestcore.joint_select(array_api_strict.eye(4), 2, n_chunks=2, seed=0)
        print(sorted(m for m in ("torch", "jax", "jaxlib") if m in sys.modules))
        """
    )
    assert out.strip() == "[]"
