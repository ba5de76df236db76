"""A portable counter-based random generator written in array-API integer operations.

One seed gives bit-identical 32-bit integers, and so bit-identical uniforms, on every
array-API namespace (NumPy, PyTorch, JAX, array-api-strict): the generator is a stateless
hash of ``(seed, row, column)`` computed with wrapping ``int32`` arithmetic and masked right
shifts, which every framework implements the same way.

Gumbel noise ``g = -log(-log(u))`` of those uniforms is float32 and is **not** bit-identical
across namespaces: frameworks round float32 ``log`` differently, and the outer ``log`` cancels
near ``u = 1/e``, so the difference is absolute near ``g = 0``, not a few ulp of ``g``. Each
namespace's noise lies within ``4 * 2**-23 * max(1, |g|)`` (about ``4.8e-7 * max(1, |g|)``) of
the exact value, so two namespaces agree to twice that. Measured on 4.2 million draws
(``tests/test_random.py`` checks the bound on every backend): at most 2.4, 1.1 and 1.4 units of
``2**-23 * max(1, |g|)`` from exact on NumPy, PyTorch and JAX; a third of the entries differ
between NumPy and PyTorch or JAX, by up to 2.4e-7 where ``|g| < 1``. So a selection with
``seed=`` is the same on every namespace except at near-ties: two candidates whose perturbed
logits are within about ``1e-6 * max(1, |g|)`` may be ordered differently (see
``docs/sharp-bits.md``).

The generator is for sampling, **not cryptography**: it is a fast integer hash (the
``lowbias32`` finaliser applied twice), statistically uniform but predictable.

There is no global state. A seed is an int in ``[0, 2**32)``: a Python int, a NumPy integer or
a 0-d integer array of any integer dtype, whose value must lie in that range (``-1`` and
``np.int64(2**32)`` are refused alike). Only a traced array (under ``jax.jit`` or
``torch.compile``, where its value cannot be read) is not checked: its low 32 bits are the
seed. :func:`fold_in` derives independent seeds, e.g. one per training step.
"""

from __future__ import annotations

from typing import Any

from jestcore._namespace import namespace_of, same_device
from jestcore.backends import get_backend

__all__ = ["fold_in", "gumbel_noise", "uniform"]

_SEED_MIX = 0x243F6A88
_GOLDEN = 0x9E3779B9 - 2**32  # as an int32 bit pattern
_M1 = 0x7FEB352D
_M2 = 0x846CA68B - 2**32
_MANTISSA_BITS = 23  # uniforms (k + 0.5) / 2**23 are exact in float32 and lie in (0, 1)


def _wrap_int(v: int) -> int:
    """Wraps a Python int to the int32 value with the same low 32 bits."""
    return ((v + 2**31) % 2**32) - 2**31


def _srl(x: Any, k: int) -> Any:
    """Logical right shift of int32 bit patterns (arithmetic shift, then mask)."""
    return (x >> k) & ((1 << (32 - k)) - 1)


def _mix(x: Any, wrap: Any = None) -> Any:
    """The lowbias32 integer finaliser on int32 bit patterns (arrays, or ints with ``wrap``)."""
    w = wrap or (lambda v: v)
    x = w(x ^ _srl(x, 16))
    x = w(x * _M1)
    x = w(x ^ _srl(x, 15))
    x = w(x * _M2)
    return w(x ^ _srl(x, 16))


def _check_integer(value: Any, name: str, expected: str) -> Any:
    """``value`` must be a Python int or a 0-d integer array; returns the array's namespace."""
    if isinstance(value, bool) or not (isinstance(value, int) or hasattr(value, "dtype")):
        raise TypeError(f"{expected}, got {value!r}")
    if isinstance(value, int):
        return None
    xp = namespace_of(value, name=name)
    if getattr(value, "ndim", None) != 0 or not xp.isdtype(value.dtype, "integral"):
        raise TypeError(
            f"{expected}, got an array of shape {tuple(value.shape)} and dtype {value.dtype}"
        )
    return xp


def _check_seed(seed: Any, name: str = "seed") -> None:
    """A seed is an int in ``[0, 2**32)``: a Python int, NumPy integer or 0-d integer array.

    One rule for every concrete seed, whatever its type or dtype. Only a traced array (under
    ``jax.jit`` or ``torch.compile``, where its value cannot be read) is taken as is: its low
    32 bits are the seed.
    """
    expected = f"{name} must be an int in [0, 2**32) or a 0-d integer array"
    xp = _check_integer(seed, name, expected)
    if xp is not None:
        if get_backend(xp).is_lazy(seed):
            return
        seed = int(seed)
    if not 0 <= seed < 2**32:
        raise ValueError(f"{expected}, got {seed}")


def _as_int32(value: Any, xp: Any, device: Any) -> Any:
    """A Python int or 0-d integer array as a shape-(1,) int32 array of its low 32 bits.

    Shape (1,), not 0-d: NumPy treats 0-d arrays as scalars and warns when their (intended)
    wrapping arithmetic overflows.
    """
    if isinstance(value, int):
        return xp.asarray([_wrap_int(value)], dtype=xp.int32, device=device)
    x = xp.reshape(xp.astype(value, xp.int32), (1,))  # astype keeps the low 32 bits
    return x if device is None else xp.asarray(x, device=device)


def _seed_key(seed: Any, xp: Any, device: Any) -> Any:
    """The shape-(1,) int32 key of a validated seed, in namespace ``xp`` on ``device``."""
    return _mix(_as_int32(seed, xp, device) ^ _SEED_MIX)


def fold_in(seed: Any, data: int | Any, /) -> Any:
    """Derives a new seed from ``seed`` and an integer ``data`` (e.g. a step counter).

    Args:
        seed: An int in ``[0, 2**32)`` (Python or NumPy) or a 0-d integer array (see
            :func:`uniform`).
        data: Any Python int, or a 0-d integer array, of any value: only its low 32 bits are
            used (a step counter past ``2**32`` wraps).

    Returns:
        A Python int in ``[0, 2**32)`` when both arguments are Python ints, else a 0-d uint32
        array holding the same value (a valid seed on every namespace).

    Raises:
        TypeError: If ``seed`` or ``data`` is not an int or a 0-d integer array.
        ValueError: If ``seed`` is out of range, or the two arrays are on different devices.

    Example:
        >>> fold_in(0, 1) != fold_in(0, 2)
        True
    """
    _check_seed(seed)
    _check_integer(data, "data", "data must be an int or a 0-d integer array")
    if isinstance(seed, int) and isinstance(data, int):
        key = _mix(_wrap_int(seed) ^ _SEED_MIX, _wrap_int)
        return _mix(_wrap_int(key + _mix(_wrap_int(data), _wrap_int) * _GOLDEN), _wrap_int) % 2**32
    arrays = [a for a in (seed, data) if not isinstance(a, int)]
    xp = namespace_of(*arrays, name="seed, data")
    device = same_device({"seed": seed, "data": data})
    key = _seed_key(seed, xp, device)
    folded = _mix(key + _mix(_as_int32(data, xp, device)) * _GOLDEN)
    return xp.reshape(xp.astype(folded, xp.uint32), ())


def _bits(key: Any, row: int, n: int, xp: Any, device: Any) -> Any:
    """32 random bits (int32 patterns) for columns ``0..n-1`` of ``row`` of the stream."""
    row_key = _mix(key + _wrap_int((row + 1) * _GOLDEN))
    col = xp.arange(n, dtype=xp.int32, device=device)
    return _mix(_mix(col ^ row_key) + row_key)


def _uniform_row(key: Any, row: int, n: int, xp: Any, device: Any) -> Any:
    k = _srl(_bits(key, row, n, xp, device), 32 - _MANTISSA_BITS)
    return (xp.astype(k, xp.float32) + 0.5) * (2.0**-_MANTISSA_BITS)


def _gumbel_row(key: Any, row: int, n: int, xp: Any, device: Any) -> Any:
    return -xp.log(-xp.log(_uniform_row(key, row, n, xp, device)))


def _stack_rows(fn: Any, seed: Any, shape: tuple[int, ...], xp: Any, device: Any) -> Any:
    _check_seed(seed)
    if not all(hasattr(xp, f) for f in ("asarray", "arange", "stack", "log")):
        raise TypeError(
            "xp must be an array-API namespace (e.g. numpy, jax.numpy or "
            f"array_api_compat.torch), got {xp!r}"
        )
    if not isinstance(shape, tuple | list):
        raise TypeError(f"shape must be a tuple (n,) or (rows, n), got {type(shape).__name__}")
    if len(shape) not in (1, 2) or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape
    ):
        raise ValueError(f"shape must be (n,) or (rows, n) of non-negative ints, got {shape!r}")
    shape = tuple(shape)
    if shape[-1] >= 2**31:
        raise ValueError(f"shape[-1] must be below 2**31, got {shape[-1]}")
    key = _seed_key(seed, xp, device)
    if len(shape) == 1:
        return fn(key, 0, shape[0], xp, device)
    return xp.stack([fn(key, r, shape[1], xp, device) for r in range(shape[0])])


def uniform(seed: Any, shape: tuple[int, ...], /, *, xp: Any, device: Any = None) -> Any:
    """Float32 uniforms in the open interval (0, 1), 23 bits of resolution.

    Row ``r`` of a 2-D draw equals the 1-D draw of the same seed for ``r = 0``; rows are
    independent streams.

    Args:
        seed: An int in ``[0, 2**32)``: a Python int, a NumPy integer or a 0-d integer array
            (a traced array's low 32 bits are used).
        shape: ``(n,)`` or ``(rows, n)``.
        xp: The array namespace to create the result in.
        device: The device to create the result on (default: the namespace's default).

    Returns:
        An array of ``shape`` and dtype float32.

    Example:
        >>> import numpy as np
        >>> u = uniform(0, (2, 1000), xp=np)
        >>> bool(((u > 0) & (u < 1)).all()), u.dtype.name
        (True, 'float32')
    """
    return _stack_rows(_uniform_row, seed, shape, xp, device)


def gumbel_noise(seed: Any, shape: tuple[int, ...], /, *, xp: Any, device: Any = None) -> Any:
    """Standard Gumbel noise ``-log(-log(u))`` from :func:`uniform`, float32.

    Not bit-identical across namespaces: within ``4 * 2**-23 * max(1, |g|)`` of the exact value
    on each (see the module docstring).

    This is the noise that ``joint_select(..., seed=seed)`` adds (row ``k`` for chunk ``k``),
    so ``joint_select(S, b, seed=s)`` equals ``joint_select(S, b, noise=gumbel_noise(s, ...))``.

    Args:
        seed: An int in ``[0, 2**32)``: a Python int, a NumPy integer or a 0-d integer array
            (a traced array's low 32 bits are used).
        shape: ``(n,)`` or ``(rows, n)``.
        xp: The array namespace to create the result in.
        device: The device to create the result on (default: the namespace's default).

    Returns:
        An array of ``shape`` and dtype float32, values in about ``[-2.8, 16.6]``.

    Example:
        >>> import numpy as np
        >>> g = gumbel_noise(7, (16, 4096), xp=np)
        >>> round(float(g.mean()), 1)  # the Euler-Mascheroni constant, 0.577...
        0.6
    """
    return _stack_rows(_gumbel_row, seed, shape, xp, device)
