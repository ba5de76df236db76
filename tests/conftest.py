"""Shared fixtures: array backends, conversion helpers and hypothesis profiles.

Inputs and expected values are built in NumPy; only the function under test runs on the backend
under test (``to_xp``), so a failure points at one place.
"""

from __future__ import annotations

import os
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

BACKENDS = ["numpy", "numpy_readonly", "array_api_strict", "array_api_strict_jit", "torch", "jax"]


class Backend:
    """A backend under test: converts NumPy inputs to it and results back."""

    def __init__(self, name: str):
        self.name = name
        if name.startswith("array_api_strict"):
            import array_api_strict

            if name.endswith("_jit"):
                # No boolean indexing and no data-dependent shapes: the code is jit-shaped.
                array_api_strict.set_array_api_strict_flags(
                    boolean_indexing=False, data_dependent_shapes=False
                )
            self.xp = array_api_strict
        elif name == "torch":
            import torch

            self.xp = array_api_compat.array_namespace(torch.zeros(1))
        elif name == "jax":
            import jax.numpy as jnp

            self.xp = jnp
        else:
            self.xp = array_api_compat.array_namespace(np.zeros(1))

    def asarray(self, x: Any) -> Any:
        """NumPy (or Python) ``x`` as an array of this backend (read-only for numpy_readonly)."""
        if isinstance(x, int | float):
            return x
        x = np.asarray(x)
        if self.name == "numpy_readonly":
            x = x.copy()
            x.flags.writeable = False
            return x
        if self.name == "numpy":
            return x
        if self.name == "torch":
            import torch

            return torch.from_numpy(x.copy())
        if self.name == "jax":
            import jax.numpy as jnp

            return jnp.asarray(x)
        return self.xp.asarray(x)

    def to_numpy(self, x: Any) -> np.ndarray:
        """A result as NumPy, asserting that it really is an array of this backend."""
        assert self.is_mine(x), f"expected a {self.name} array, got {type(x)}"
        if self.name == "torch":
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def is_mine(self, x: Any) -> bool:
        if self.name.startswith("numpy"):
            return isinstance(x, np.ndarray)
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


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Any:
    b = Backend(request.param)
    yield b
    if request.param == "array_api_strict_jit":
        import array_api_strict

        array_api_strict.reset_array_api_strict_flags()
