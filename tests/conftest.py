"""Shared fixtures: the ``xp`` array backends, conversion helpers and hypothesis profiles.

``xp`` is the one parametrised backend fixture of the suite (numpy, read-only numpy,
array-api-strict, array-api-strict without data-dependent shapes, torch, jax): see :class:`XP`.
Inputs and expected values are built in NumPy; only the function under test runs on the backend
under test (``xp.from_numpy``), and ``xp.to_numpy`` checks that results really are of it, so a
failure points at one place. ``backend`` is the same parametrisation in an older form, kept
until every test file uses ``xp``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import array_api_compat
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=40,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
settings.register_profile("dev", deadline=None, max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: The backends of the ``xp`` fixture.
BACKENDS = ["numpy", "numpy_readonly", "array_api_strict", "array_api_strict_jit", "torch", "jax"]


class XP:
    """The array namespace under test: what the ``xp`` fixture gives a test.

    Every attribute of the real namespace (``xp.float32``, ``xp.sum``, ...) is the namespace's own,
    so ``xp`` can be passed wherever jestcore takes a namespace (``uniform(0, (3,), xp=xp)``).
    ``xp.asarray`` of the ``numpy_readonly`` backend returns read-only arrays, which catches
    functions that write into their inputs. Tests build inputs and expected values in NumPy and
    convert only the arguments of the function under test, with these helpers:

    * ``xp.name``: the backend's name, one of :data:`BACKENDS`;
    * ``xp.namespace``: the real namespace (e.g. for ``get_backend``);
    * ``xp.from_numpy(a)``: NumPy ``a`` as an array of this backend (Python numbers pass through);
    * ``xp.to_numpy(x)``: a result as NumPy, asserting that it really is of this backend;
    * ``xp.is_mine(x)``, ``xp.float64`` (whether float64 stays float64: JAX needs x64).
    """

    def __init__(self, name: str):
        self.name = name
        if name.startswith("array_api_strict"):
            import array_api_strict

            if name.endswith("_jit"):
                # No boolean indexing and no data-dependent shapes: the code is jit-shaped.
                array_api_strict.set_array_api_strict_flags(
                    boolean_indexing=False, data_dependent_shapes=False
                )
            self.namespace: Any = array_api_strict
        elif name == "torch":
            import torch

            self.namespace = array_api_compat.array_namespace(torch.zeros(1))
        elif name == "jax":
            import jax.numpy as jnp

            self.namespace = jnp
        else:
            self.namespace = array_api_compat.array_namespace(np.zeros(1))

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.namespace, attr)

    def asarray(self, obj: Any, /, **kwargs: Any) -> Any:
        """The namespace's ``asarray``; read-only results for ``numpy_readonly``."""
        x = self.namespace.asarray(obj, **kwargs)
        if self.name == "numpy_readonly":
            x = np.array(x, copy=True)
            x.flags.writeable = False
        return x

    def from_numpy(self, x: Any) -> Any:
        """NumPy (or Python) ``x`` as an array of this backend (Python numbers pass through)."""
        if isinstance(x, int | float):
            return x
        x = np.asarray(x)
        if self.name == "torch":
            import torch

            return torch.from_numpy(x.copy())
        return self.asarray(x)

    def to_numpy(self, x: Any) -> np.ndarray:
        """A result as NumPy, asserting that it really is an array of this backend."""
        assert self.is_mine(x), f"expected a {self.name} array, got {type(x)}"
        if self.name == "torch":
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def is_mine(self, x: Any) -> bool:
        """Whether ``x`` is an array of this backend (NumPy scalars count as NumPy arrays)."""
        if self.name.startswith("numpy"):
            return isinstance(x, np.ndarray | np.generic)
        if self.name == "torch":
            return array_api_compat.is_torch_array(x)
        if self.name == "jax":
            return array_api_compat.is_jax_array(x)
        return type(x).__module__.startswith("array_api_strict")

    @property
    def float64(self) -> bool:
        """Whether float64 inputs stay float64 (JAX needs x64 mode)."""
        if self.name == "jax":
            import jax

            return bool(jax.config.jax_enable_x64)
        return True

    def __repr__(self) -> str:
        return self.name


class Backend:
    """The older view of the ``xp`` fixture (``backend`` fixture), kept until tests switch.

    ``backend.xp`` is the real namespace and ``backend.asarray`` converts NumPy inputs
    (``XP.from_numpy``).
    """

    def __init__(self, xp: XP):
        self.name, self.xp, self._xp = xp.name, xp.namespace, xp

    def asarray(self, x: Any) -> Any:
        return self._xp.from_numpy(x)

    def to_numpy(self, x: Any) -> np.ndarray:
        return self._xp.to_numpy(x)

    def is_mine(self, x: Any) -> bool:
        return self._xp.is_mine(x)

    @property
    def float64(self) -> bool:
        return self._xp.float64

    def __repr__(self) -> str:
        return self.name


@contextlib.contextmanager
def _backend_under_test(name: str) -> Iterator[XP]:
    """The :class:`XP` of backend ``name``, with array-api-strict's flags reset afterwards."""
    try:
        yield XP(name)
    finally:
        if name == "array_api_strict_jit":
            import array_api_strict

            array_api_strict.reset_array_api_strict_flags()


@pytest.fixture(params=BACKENDS)
def xp(request: pytest.FixtureRequest) -> Iterator[XP]:
    """The one parametrised array backend of the suite: an :class:`XP` namespace per backend.

    A test may narrow it with ``@pytest.mark.parametrize("xp", [...names], indirect=True)``.
    """
    with _backend_under_test(request.param) as namespace:
        yield namespace


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The same backends as ``xp``, in the older :class:`Backend` form (also ``indirect``)."""
    with _backend_under_test(request.param) as namespace:
        yield Backend(namespace)
