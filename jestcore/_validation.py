"""Checks of the inputs, run eagerly before any work; every message names the argument."""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

from jestcore._namespace import namespace_of
from jestcore.random import _check_seed


def check_int(
    name: str, value: Any, *, low: int, high: int | None = None, high_doc: str = ""
) -> int:
    """``value`` as an int in ``[low, high]``; bools, floats and others are refused."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if v < low or (high is not None and v > high):
        bound = f"between {low} and {high_doc or high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {v}")
    return v


def check_ratio(name: str, value: Any) -> float:
    """``value`` as a float in ``[0, 1)``: a real number (NumPy scalars too), never a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(value).__name__} {value!r}")
    ratio = float(value)
    if not 0 <= ratio < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return ratio


def check_gain(gain: Any) -> float:
    """``gain`` as a Python float: a real number (NumPy scalars too, never a bool), finite, > 0.

    The gain multiplies the logits before the Gumbel noise is added (the paper's
    ``softmax_score_gain``); a Python float keeps the logits' dtype (a NumPy float64 scalar
    would promote float32 logits).
    """
    if isinstance(gain, bool) or not isinstance(gain, numbers.Real):
        raise TypeError(
            f"gain must be a real number (e.g. 100.0), got {type(gain).__name__} {gain!r}"
        )
    g = float(gain)
    if not (math.isfinite(g) and g > 0):
        raise ValueError(f"gain must be finite and > 0, got {gain}")
    return g


def check_gain_fits(gain: float, bound: float, xp: Any, dtype: Any, what: str) -> None:
    """Refuses a ``gain`` under which ``gain * logit`` could overflow the logits' ``dtype``.

    ``bound`` is an upper bound on ``|logit|`` over every chunk (from the inputs' magnitudes);
    ``what`` says where it comes from. The logits themselves must fit too, so a gain below one
    is checked as one. Otherwise an overflowing ``gain * logit`` would become infinite and
    silently rank last.
    """
    big = float(xp.finfo(dtype).max)
    if bound * max(gain, 1.0) <= big:
        return
    raise ValueError(
        f"gain = {gain:g} could overflow {xp.finfo(dtype).dtype}: the logits are bounded only by "
        f"{bound:.4g} ({what}), and gain * {bound:.4g} exceeds {big:.4g}; lower gain or rescale "
        "the inputs"
    )


def check_floating(name: str, x: Any, xp: Any, *, ndim: int | None = None) -> None:
    """Refuses arrays that are not real floating point, or that have the wrong ``ndim``."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")


def check_nonempty(name: str, x: Any) -> None:
    """Refuses an empty batch: ``x`` must hold at least one example along its first axis."""
    if x.shape[0] == 0:
        raise ValueError(
            f"{name} must hold at least one example (N >= 1), got shape {tuple(x.shape)}"
        )


def check_finite(name: str, x: Any, xp: Any, backend: Any) -> None:
    """Raises naming the first NaN or infinite entry of ``x``; skipped for traced arrays."""
    if backend.is_lazy(x):
        return
    bad = ~xp.isfinite(x)
    if not bool(xp.any(bad)):
        return
    flat = int(xp.argmax(xp.astype(xp.reshape(bad, (-1,)), xp.int8)))
    value = float(xp.reshape(x, (-1,))[flat])
    pos = []
    for size in reversed(tuple(x.shape)):
        pos.append(flat % size)
        flat //= size
    where = tuple(reversed(pos))
    raise ValueError(f"{name} must be finite, but {name}[{', '.join(map(str, where))}] is {value}")


def check_randomness(seed: Any, noise: Any, greedy: Any, shape: tuple[int, ...], xp: Any) -> None:
    """Exactly one source of randomness: ``seed``, ``noise`` of ``shape``, or ``greedy=True``."""
    if not isinstance(greedy, bool):
        raise TypeError(f"greedy must be a bool, got {greedy!r}")
    given = [n for n, v in (("seed", seed), ("noise", noise)) if v is not None]
    if greedy:
        given.append("greedy=True")
    if len(given) != 1:
        raise ValueError(
            "give exactly one source of randomness: seed=..., noise=... or greedy=True; "
            f"got {', '.join(given) if given else 'none'}"
        )
    if seed is not None:
        _check_seed(seed)
        if not isinstance(seed, int) and namespace_of(seed, name="seed") is not xp:
            raise TypeError(
                "seed must be a Python int or a 0-d integer array of the inputs' namespace, got "
                f"a {type(seed).__module__}.{type(seed).__name__}"
            )
    if noise is not None:
        check_floating("noise", noise, xp)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")


def check_seed(seed: Any, name: str = "seed") -> None:
    """Refuses a seed that is not an int in ``[0, 2**32)`` or a 0-d integer array."""
    _check_seed(seed, name)


def check_fits(name: str, x: Any, xp: Any, dtype: Any, why: str) -> None:
    """Refuses finite entries of ``x`` beyond the largest finite value of floating ``dtype``.

    For inputs about to be converted to ``dtype`` (where they would become infinite), so that
    the message says what happened instead of calling a finite value "not finite". ``why``
    says why the conversion happens. Skipped for traced arrays (nothing converts them).
    """
    info = xp.finfo(dtype)
    big = info.max
    over = xp.isfinite(x) & (xp.abs(x) > big)
    if not bool(xp.any(over)):
        return
    where, value = _first(over, x, xp)
    raise ValueError(
        f"{name} must fit in {info.dtype} (|x| <= {float(big):.4g}), but {name}[{where}] is "
        f"{value:g}: {why}"
    )


def _first(mask: Any, x: Any, xp: Any) -> tuple[str, float]:
    """The position (``"i, j"``) and value of the first entry of ``x`` where ``mask`` holds."""
    flat = int(xp.argmax(xp.astype(xp.reshape(mask, (-1,)), xp.int8)))
    value = float(xp.reshape(x, (-1,))[flat])
    pos = []
    for size in reversed(tuple(x.shape)):
        pos.append(flat % size)
        flat //= size
    return ", ".join(map(str, reversed(pos))), value
