"""Property fuzzing over valid inputs: every backend, every source of randomness, hard values.

Inputs are drawn in NumPy (scales from 1e-6 to 1e4, large biases, exact ties: constant scores,
duplicated examples, small integers; float16/bfloat16/float32/float64), converted to NumPy,
PyTorch and JAX, and selected from. On every backend, always:

* ``n_select`` distinct indices in ``[0, N)``, an integer array of that backend;
* no warning (overflow, invalid value...: warnings are errors here);
* the same call twice gives the same indices (greedy, seeded and explicit noise alike);
* the result equals the literal Algorithm 1 (``tests/oracle.py``) in float64 and NumPy's result,
  up to genuine floating-point near-ties (``helpers.assert_same_selection``), so tie-free inputs
  select identically everywhere; exact ties go to the lower index on every backend.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest
import torch
from helpers import RTOL, assert_same_selection, embedding_magnitude, joint_perturbed
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jestcore.adapters import jax as jj

import jestcore
from jestcore import PairEmbeddings

pytestmark = pytest.mark.filterwarnings("error")

BACKENDS = ("numpy", "torch", "jax")
SIZES = (1, 2, 7, 24)  # few shapes: JAX compiles each operation once per shape
SCORES = ("learnability", "hard_learner", "easy_reference")


# ----------------------------------------------------------------------------- conversion


def to_backend(x: np.ndarray, backend: str, dtype: str) -> Any:
    """NumPy ``x`` as a ``dtype`` array of ``backend`` (bfloat16: PyTorch and JAX only)."""
    if backend == "numpy":
        return x.astype(dtype)
    if backend == "torch":
        return torch.from_numpy(np.asarray(x, dtype=np.float64)).to(getattr(torch, dtype))
    if dtype == "float64" and not jax.config.jax_enable_x64:
        dtype = "float32"  # JAX's 64-bit types are off
    return jnp.asarray(x, dtype=getattr(jnp, dtype))


def values_of(x: Any) -> np.ndarray:
    """The exact values a backend array holds, as NumPy (float64 holds them all)."""
    if isinstance(x, torch.Tensor):
        return x.to(torch.float64).numpy()
    return np.asarray(np.asarray(x).astype(np.float64))


def computes_in_float64(x: Any) -> bool:
    """Whether selection on ``x`` runs in float64 (else float32: float16/bfloat16 upcast)."""
    return str(x.dtype).endswith("float64")


def assert_valid(idx: Any, backend: str, n_select: int, n: int) -> np.ndarray:
    """``idx`` is ``n_select`` distinct in-range integer indices, an array of ``backend``."""
    kind = {"numpy": np.ndarray, "torch": torch.Tensor, "jax": jax.Array}[backend]
    assert isinstance(idx, kind), f"{backend} returned a {type(idx)}"
    got = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx)
    assert got.shape == (n_select,), got.shape
    assert np.issubdtype(got.dtype, np.integer), got.dtype
    assert len(set(got.tolist())) == n_select, f"repeated index: {got.tolist()}"
    assert got.min() >= 0 and got.max() < n, f"index out of range: {got.tolist()}"
    return got


def randomness(kind: str, seed: int, shape: tuple[int, ...], backend: str) -> tuple[dict, Any]:
    """Keyword arguments for one source of randomness, and the float32 noise it means."""
    if kind == "greedy":
        return {"greedy": True}, None
    noise = jestcore.gumbel_noise(seed, shape, xp=np)
    if kind == "noise":
        return {"noise": to_backend(noise, backend, "float32")}, noise
    if kind == "seed_array":
        as_array = {"numpy": np.asarray, "torch": torch.tensor, "jax": jnp.asarray}[backend]
        return {"seed": as_array(seed % 2**31)}, jestcore.gumbel_noise(seed % 2**31, shape, xp=np)
    return {"seed": seed}, noise


# ----------------------------------------------------------------------------- matrices


@st.composite
def matrix_problems(draw: st.DrawFn) -> tuple:
    n = draw(st.sampled_from(SIZES))
    n_select = draw(st.integers(1, n))
    n_chunks = draw(st.integers(1, min(n_select, 6)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "constant", "integers", "duplicated"]))
    scale = 10.0 ** draw(st.floats(-6, 4))
    bias = draw(st.sampled_from([0.0, 1.0, -3.0, 1e3, -1e4]))
    if kind == "constant":
        s = np.full((n, n), scale)
    elif kind == "integers":
        s = rng.integers(-3, 4, (n, n)) * scale
    elif kind == "duplicated":  # some examples appear twice: their rows and columns are equal
        pick = rng.integers(0, max(1, n // 2), n)
        s = (rng.standard_normal((n, n)) * scale)[np.ix_(pick, pick)]
    else:
        s = rng.standard_normal((n, n)) * scale
    dtype = draw(st.sampled_from(["float16", "float32", "float64", "bfloat16"]))
    return np.clip(s + bias, -6e4, 6e4), n_select, n_chunks, kind, dtype  # float16 max: 65504


#: Score gains the fuzz tests draw: Algorithm 1 as printed, one in between, the default.
GAINS = (1.0, 3.5, 100.0)


def _check_matrix(problem, backend, mode, seed, gain):
    s, n_select, n_chunks, kind, dtype = problem
    if dtype == "bfloat16" and backend == "numpy":
        dtype = "float32"  # NumPy has no bfloat16
    scores = to_backend(s, backend, dtype)
    exact = values_of(scores)  # what the backend really holds (rounded to its dtype)
    n = exact.shape[0]
    kwargs, noise = randomness(mode, seed, (n_chunks, n), backend)
    got = jestcore.joint_select(scores, n_select, n_chunks=n_chunks, gain=gain, **kwargs)
    idx = assert_valid(got, backend, n_select, n)
    again = jestcore.joint_select(scores, n_select, n_chunks=n_chunks, gain=gain, **kwargs)
    np.testing.assert_array_equal(values_of(again).astype(np.int64), idx)
    rtol = RTOL["float64" if computes_in_float64(scores) else "float32"]
    sizes = oracle.split_chunks(n_select, n_chunks)
    assert_same_selection(
        idx,
        oracle.select(exact, n_select, n_chunks, noise, gain=gain),
        sizes=sizes,
        n=n,
        perturbed=joint_perturbed(exact, noise, gain=gain),
        rtol=rtol,
    )
    if kind == "constant" and mode == "greedy":
        # every candidate ties at every chunk (the same sums, in the same order): lower index
        assert idx.tolist() == list(range(n_select))
    return idx


@settings(max_examples=30)
@given(
    matrix_problems(),
    st.sampled_from(["greedy", "seed", "noise", "seed_array"]),
    st.integers(0, 2**32 - 1),
    st.sampled_from(GAINS),
)
@example((np.full((24, 24), 1e4), 24, 6, "constant", "float16"), "greedy", 0, 100.0)  # > 65504
@example((np.full((7, 7), -1e-6), 3, 2, "constant", "float64"), "greedy", 0, 1.0)
@example((np.eye(24) * 1e4 - 1e4, 11, 4, "integers", "bfloat16"), "seed", 2**32 - 1, 100.0)
@example((np.eye(24) * 1e4 - 1e4, 11, 4, "integers", "float16"), "noise", 7, 3.5)
def test_joint_select_is_valid_deterministic_and_exact_on_every_backend(problem, mode, seed, gain):
    results = {b: _check_matrix(problem, b, mode, seed, gain) for b in BACKENDS}
    # tie-free, the backends agree exactly; a difference must be a genuine near-tie (above)
    s, n_select, n_chunks, _, dtype = problem
    if dtype == "float32" and mode == "greedy":
        exact = s.astype(np.float32).astype(np.float64)
        for b in ("torch", "jax"):
            assert_same_selection(
                results[b],
                results["numpy"],
                sizes=oracle.split_chunks(n_select, n_chunks),
                n=s.shape[0],
                perturbed=joint_perturbed(exact, None, gain=gain),
                rtol=RTOL["float32"],
            )


@settings(max_examples=30)
@given(
    matrix_problems(),
    st.sampled_from(["greedy", "seed", "noise"]),
    st.integers(0, 2**32 - 1),
    st.sampled_from(GAINS),
)
def test_independent_select_is_valid_deterministic_and_exact_on_every_backend(
    problem, mode, seed, gain
):
    s, n_select, _, kind, dtype = problem
    v = np.diagonal(s).copy()
    for backend in BACKENDS:
        dt = "float32" if dtype == "bfloat16" and backend == "numpy" else dtype
        scores = to_backend(v, backend, dt)
        exact = values_of(scores)
        kwargs, noise = randomness(mode, seed, (v.shape[0],), backend)
        got = jestcore.independent_select(scores, n_select, gain=gain, **kwargs)
        idx = assert_valid(got, backend, n_select, v.shape[0])
        again = jestcore.independent_select(scores, n_select, gain=gain, **kwargs)
        np.testing.assert_array_equal(values_of(again).astype(np.int64), idx)
        assert_same_selection(
            idx,
            oracle.select_independent(exact, n_select, noise, gain=gain),
            sizes=[n_select],
            n=v.shape[0],
            perturbed=joint_perturbed(
                np.diag(exact), None if noise is None else noise[None], gain=gain
            ),
            rtol=RTOL["float64" if computes_in_float64(scores) else "float32"],
        )
        if kind == "constant" and mode == "greedy":
            assert idx.tolist() == list(range(n_select))


# ----------------------------------------------------------------------------- embeddings


@st.composite
def embedding_problems(draw: st.DrawFn, sizes: tuple[int, ...] = SIZES) -> tuple:
    n = draw(st.sampled_from(sizes))
    d = draw(st.sampled_from([1, 3, 8]))
    n_select = draw(st.integers(1, n))
    n_chunks = draw(st.integers(1, min(n_select, 6)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "normalised", "constant", "duplicated"]))

    def model() -> PairEmbeddings:
        size = 10.0 ** draw(st.floats(-3, 2))
        x = rng.standard_normal((2, n, d))
        if kind == "normalised":
            x /= np.linalg.norm(x, axis=-1, keepdims=True)
        elif kind == "constant":
            x = np.broadcast_to(x[:, :1], x.shape)
        elif kind == "duplicated":
            x = x[:, rng.integers(0, max(1, n // 2), n)]
        scale = 10.0 ** draw(st.floats(-6, 4))
        bias = draw(st.sampled_from([0.0, -10.0, 5.0, -1e3, 1e4]))
        return PairEmbeddings(*(np.clip(x * size, -6e4, 6e4)), scale, bias)

    learner, reference = model(), model()
    dtype = draw(st.sampled_from(["float16", "bfloat16", "float32", "float64"]))
    return learner, reference, n_select, n_chunks, draw(st.sampled_from(SCORES)), kind, dtype


def convert_model(m: PairEmbeddings, backend: str, dtype: str) -> tuple[PairEmbeddings, Any]:
    """The model on ``backend`` and the exact float64 values it holds (for the oracle)."""
    image, text = (to_backend(x, backend, dtype) for x in m[:2])
    on = PairEmbeddings(image, text, m.scale, m.bias)
    return on, PairEmbeddings(values_of(image), values_of(text), m.scale, m.bias)


@settings(max_examples=30)
@given(
    embedding_problems(),
    st.sampled_from(["greedy", "seed", "noise"]),
    st.integers(0, 2**32 - 1),
    st.sampled_from(GAINS),
)
@example(  # every pair identical: all candidates tie (up to rounding) at every chunk
    (
        PairEmbeddings(np.ones((24, 3)), np.ones((24, 3)), 1e4, -1e4),
        PairEmbeddings(np.ones((24, 3)), np.ones((24, 3)), 1e-6, 0.0),
        13,
        4,
        "learnability",
        "constant",
        "float16",
    ),
    "greedy",
    0,
    100.0,
)
def test_joint_select_embeddings_is_valid_deterministic_and_exact(problem, mode, seed, gain):
    learner, reference, n_select, n_chunks, score, _, dtype = problem
    n = learner.image.shape[0]
    for backend in BACKENDS:
        dt = "float32" if dtype == "bfloat16" and backend == "numpy" else dtype
        (lb, le), (rb, re) = (convert_model(m, backend, dt) for m in (learner, reference))
        args = (
            (lb, rb)
            if score == "learnability"
            else (lb, None)
            if score == "hard_learner"
            else (None, rb)
        )
        kwargs, noise = randomness(mode, seed, (n_chunks, n), backend)
        call = {"n_chunks": n_chunks, "score": score, "gain": gain, **kwargs}
        got = jestcore.joint_select_embeddings(*args, n_select, **call)
        idx = assert_valid(got, backend, n_select, n)
        again = jestcore.joint_select_embeddings(*args, n_select, **call)
        np.testing.assert_array_equal(values_of(again).astype(np.int64), idx)
        dense = oracle.dense_scores(le, re, score)
        assert_same_selection(
            idx,
            oracle.select(dense, n_select, n_chunks, noise, gain=gain),
            sizes=oracle.split_chunks(n_select, n_chunks),
            n=n,
            perturbed=joint_perturbed(dense, noise, embedding_magnitude(le, re, score), gain=gain),
            rtol=RTOL["float64" if computes_in_float64(lb.image) else "float32"],
        )


# ----------------------------------------------------------------------------- the JAX adapter


SELECT = jax.jit(
    jj.joint_select_embeddings, static_argnames=("n_select", "n_chunks", "score", "gain", "greedy")
)
SELECT_MATRIX = jax.jit(jj.joint_select, static_argnames=("n_select", "n_chunks", "gain", "greedy"))


@settings(max_examples=15)
@given(
    embedding_problems(sizes=(24,)),
    st.sampled_from(["greedy", "seed"]),
    st.integers(0, 2**32 - 1),
    st.sampled_from(GAINS),
)
def test_the_jax_adapter_is_valid_deterministic_and_exact(problem, mode, seed, gain):
    # fixed shapes and options, so that the jitted selections compile a few times only
    learner, reference, _, _, score, _, dtype = problem
    n, n_select, n_chunks = 24, 9, 4
    dtype = "float32" if dtype == "float64" else dtype  # 64-bit types are off
    (lb, le), (rb, re) = (convert_model(m, "jax", dtype) for m in (learner, reference))
    lb, rb = (m._replace(scale=jnp.float32(m.scale), bias=jnp.float32(m.bias)) for m in (lb, rb))
    le, re = (m._replace(scale=np.float32(m.scale), bias=np.float32(m.bias)) for m in (le, re))
    kwargs, noise = randomness(mode, seed, (n_chunks, n), "jax")
    if mode == "seed":
        kwargs = {"seed": jnp.uint32(seed)}
    call = {"n_select": n_select, "n_chunks": n_chunks, "gain": gain, **kwargs}
    got = SELECT(lb, rb, score=score, **call)
    idx = assert_valid(got, "jax", n_select, n)
    again = SELECT(lb, rb, score=score, **call)
    np.testing.assert_array_equal(np.asarray(again), idx)
    dense = oracle.dense_scores(le, re, score)
    perturbed = joint_perturbed(dense, noise, embedding_magnitude(le, re, score), gain=gain)
    sizes = oracle.split_chunks(n_select, n_chunks)
    assert_same_selection(
        idx,
        oracle.select(dense, n_select, n_chunks, noise, gain=gain),
        sizes=sizes,
        n=n,
        perturbed=perturbed,
        rtol=RTOL["float32"],
    )
    # the matrix path on the same scores, rounded to float32
    scores = jnp.asarray(dense, dtype=jnp.float32)
    got = SELECT_MATRIX(scores, **call)
    exact = np.asarray(scores, dtype=np.float64)
    assert_same_selection(
        assert_valid(got, "jax", n_select, n),
        oracle.select(exact, n_select, n_chunks, noise, gain=gain),
        sizes=sizes,
        n=n,
        perturbed=joint_perturbed(exact, noise, gain=gain),
        rtol=RTOL["float32"],
    )
