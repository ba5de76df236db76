"""The validation matrix: every public entry point against every kind of bad input.

``tests/test_errors.py`` holds the per-function cases of the specification; this file adds the
cross-cutting kinds for the spec (``jestcore.__all__``) and the JAX adapter
(``jestcore.adapters.jax``): invalid seeds, empty batches, mixed namespaces, mixed devices (PyTorch
``meta`` tensors here; two JAX CPU devices in a subprocess), non-floating arrays, NaN/inf reported
at the *first* bad position, and the documented behaviour under tracing, where values cannot be
checked: a non-finite candidate ranks after every finite one (checked against a literal oracle).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest
import torch
import xla_devices
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jestcore.adapters import jax as jj

import jestcore
from jestcore import PairEmbeddings

N = 6
RNG = np.random.default_rng(0)
S = RNG.standard_normal((N, N))
V = RNG.standard_normal(N)
E = tuple(RNG.standard_normal((4, N, 3)))
SEED_MSG = r"seed must be an int in \[0, 2\*\*32\) or a 0-d integer array"


def emb(n: int = N, *, xp: str = "numpy", **changes: Any) -> PairEmbeddings:
    """A float64 (float32 on JAX) model of ``n`` pairs as arrays of ``xp``."""
    image, text = (E[0][:n], E[1][:n]) if n <= N else RNG.standard_normal((2, n, 3))
    m = PairEmbeddings(image, text, 10.0, -1.0)._replace(**changes)
    return PairEmbeddings(*(convert(x, xp) for x in m))


def convert(x: Any, xp: str) -> Any:
    """A NumPy array (or Python number) as an array of ``xp``: numpy, torch, jax or meta."""
    if not isinstance(x, np.ndarray):
        return x
    if xp == "torch":
        return torch.from_numpy(x.copy())
    if xp == "meta":
        return torch.from_numpy(x.copy()).to("meta")
    if xp == "jax":
        return jnp.asarray(x)
    return x


def mesh1():
    """A one-device mesh: ``select_sharded``'s checks run as on a real mesh."""
    return jax.make_mesh((1,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))


# Public entry points, by kind of call; a test below checks that the matrix covers every name.
SPEC_CALLABLES = {n for n in jestcore.__all__ if n != "PairEmbeddings"}
# EmbeddingCache reads files, not arrays: its bad input is tested in tests/test_jax_cache.py.
ADAPTER_CALLABLES = {
    n for n in jj.__all__ if n not in ("SCOPES", "SelectionState", "EmbeddingCache")
}


# ----------------------------------------------------------------------------- seeds


def bad_seeds(xp: str) -> list[tuple[Any, type[Exception], str]]:
    """Invalid seeds: (seed, exception, regex); arrays in namespace ``xp``."""
    arr = {"numpy": np.asarray, "torch": torch.tensor, "jax": jnp.asarray}[xp]
    return [
        (-1, ValueError, SEED_MSG + r", got -1"),
        (2**32, ValueError, SEED_MSG + r", got 4294967296"),
        (2**64, ValueError, SEED_MSG + r", got 18446744073709551616"),
        (1.0, TypeError, SEED_MSG + r", got 1.0"),
        (True, TypeError, SEED_MSG + r", got True"),
        ("3", TypeError, SEED_MSG + r", got '3'"),
        ([3], TypeError, SEED_MSG + r", got \[3\]"),
        (arr([1, 2]), TypeError, SEED_MSG + r", got an array of shape \(2,\)"),
        (arr([[1]]), TypeError, SEED_MSG + r", got an array of shape \(1, 1\)"),
        (arr(1.0), TypeError, SEED_MSG + r", got an array of shape \(\) and dtype .*float"),
        (arr(True), TypeError, SEED_MSG + r", got an array of shape \(\) and dtype .*bool"),
        # concrete values follow the int rule, whatever their type (np.int64(2**32) was seed 0)
        (np.int64(2**32), ValueError, SEED_MSG + r", got 4294967296"),
        (np.int32(-1), ValueError, SEED_MSG + r", got -1"),
        (arr(-1), ValueError, SEED_MSG + r", got -1"),
        *([(arr(2**40 + 9), ValueError, SEED_MSG + r", got 1099511627785")] if xp != "jax" else []),
    ]


SEEDED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    # name: (namespace of the inputs, call with that seed)
    "joint_select": ("numpy", lambda s: jestcore.joint_select(S, 4, n_chunks=2, seed=s)),
    "joint_select/torch": (
        "torch",
        lambda s: jestcore.joint_select(torch.from_numpy(S), 4, n_chunks=2, seed=s),
    ),
    "joint_select/jax": (
        "jax",
        lambda s: jestcore.joint_select(jnp.asarray(S), 4, n_chunks=2, seed=s),
    ),
    "independent_select": ("numpy", lambda s: jestcore.independent_select(V, 3, seed=s)),
    "joint_select_embeddings": (
        "numpy",
        lambda s: jestcore.joint_select_embeddings(emb(), emb(), 4, n_chunks=2, seed=s),
    ),
    "fold_in": ("numpy", lambda s: jestcore.fold_in(s, 1)),
    "gumbel_noise": ("numpy", lambda s: jestcore.gumbel_noise(s, (2, 3), xp=np)),
    "uniform": ("numpy", lambda s: jestcore.uniform(s, (3,), xp=np)),
    "jax.joint_select": (
        "jax",
        lambda s: jj.joint_select(jnp.asarray(S), 4, n_chunks=2, seed=s),
    ),
    "jax.joint_select_embeddings": (
        "jax",
        lambda s: jj.joint_select_embeddings(
            emb(xp="jax"), None, 2, n_chunks=1, score="hard_learner", seed=s
        ),
    ),
    "jax.select_sharded": (
        "jax",
        lambda s: jj.select_sharded(
            emb(xp="jax"), None, 2, mesh=mesh1(), n_chunks=1, score="hard_learner", seed=s
        ),
    ),
    "jax.init_state": ("jax", lambda s: jj.init_state(s)),
    "jax.JESTSelector.init": ("jax", lambda s: jj.JESTSelector(batch_size=2).init(s)),
    "jax.gumbel_rows": ("jax", lambda s: jj.gumbel_rows(s, 2, 3)),
}


@pytest.mark.parametrize("entry", sorted(SEEDED))
def test_every_seeded_entry_point_refuses_every_kind_of_bad_seed(entry):
    xp, call = SEEDED[entry]
    for seed, error, match in bad_seeds(xp):
        with pytest.raises(error, match=match):
            call(seed)
    # and the boundary values are accepted
    for seed in (0, 2**32 - 1):
        call(seed)


def test_fold_in_data_may_be_any_int_but_nothing_else():
    # data is hashed by its low 32 bits (e.g. a step counter that ran past 2**32), so any int
    assert jestcore.fold_in(5, -1) == jestcore.fold_in(5, 2**32 - 1)
    assert jestcore.fold_in(5, 2**40 + 3) == jestcore.fold_in(5, 3)
    for data, error in [
        (1.0, TypeError),
        (True, TypeError),
        ("1", TypeError),
        (None, TypeError),
        (np.asarray([1]), TypeError),
        (np.asarray(1.0), TypeError),
    ]:
        with pytest.raises(error, match=r"data must be an int .*or a 0-d integer array, got"):
            jestcore.fold_in(5, data)


def test_integer_array_seeds_select_as_the_int_of_the_same_value(xp):
    # A concrete 0-d integer array of any integer dtype is the seed of its value, as documented;
    # only traced arrays (values unknown) use their low 32 bits.
    scores = xp.from_numpy(S)

    def select(seed):
        return xp.to_numpy(jestcore.joint_select(scores, 4, n_chunks=2, seed=seed)).tolist()

    assert select(xp.asarray(7, dtype=xp.uint8)) == select(7)
    assert select(xp.asarray(2**32 - 1, dtype=xp.uint32)) == select(2**32 - 1)
    assert select(jestcore.fold_in(xp.asarray(5), 9)) == select(jestcore.fold_in(5, 9))
    if xp.name == "jax":
        traced = jax.jit(lambda x, s: jestcore.joint_select(x, 4, n_chunks=2, seed=s))
        got = traced(scores, jnp.asarray(-1, dtype=jnp.int32))
        assert np.asarray(got).tolist() == select(2**32 - 1)


# ----------------------------------------------------------------------------- empty batches


EMPTY_CASES: list[tuple[str, Callable[[], Any], str]] = [
    (
        "sub_batch_size",
        lambda: jestcore.sub_batch_size(0, filter_ratio=0.8),
        r"^n must be >= 1, got 0$",
    ),
    (
        "joint_select",
        lambda: jestcore.joint_select(np.zeros((0, 0)), 1, n_chunks=1, seed=0),
        r"scores must hold at least one example \(N >= 1\), got shape \(0, 0\)",
    ),
    (
        "independent_select",
        lambda: jestcore.independent_select(np.zeros(0), 1, greedy=True),
        r"scores must hold at least one example \(N >= 1\), got shape \(0,\)",
    ),
    (
        "joint_select_embeddings",
        lambda: jestcore.joint_select_embeddings(emb(0), emb(0), 1, n_chunks=1, seed=0),
        r"learner.image must hold at least one example \(N >= 1\), got shape \(0, 3\)",
    ),
    (
        "joint_select_embeddings",
        lambda: jestcore.joint_select_embeddings(None, emb(0), 1, score="easy_reference", seed=0),
        r"reference.image must hold at least one example",
    ),
    (
        "batch_score",
        lambda: jestcore.batch_score(np.zeros((0, 0)), np.zeros(1, np.int64)),
        r"scores must hold at least one example",
    ),
    (
        "batch_score_embeddings",
        lambda: jestcore.batch_score_embeddings(
            emb(0), None, np.zeros(1, np.int64), score="hard_learner"
        ),
        r"learner.image must hold at least one example",
    ),
    ("chunk_sizes", lambda: jestcore.chunk_sizes(0, 1), r"n_select must be >= 1, got 0"),
    (
        "joint_select",  # a batch that is not empty, but smaller than the selection
        lambda: jestcore.joint_select(np.zeros((1, 1)), 2, n_chunks=1, seed=0),
        r"n_select must be between 1 and N = 1, got 2",
    ),
    (
        "jax.joint_select",
        lambda: jj.joint_select(jnp.zeros((0, 0)), 1, n_chunks=1, greedy=True),
        r"scores must hold at least one example \(N >= 1\), got shape \(0, 0\)",
    ),
    (
        "jax.joint_select_embeddings",
        lambda: jj.joint_select_embeddings(emb(0, xp="jax"), emb(0, xp="jax"), 1, seed=0),
        r"learner.image must hold at least one example",
    ),
    (
        "jax.select_sharded",
        lambda: jj.select_sharded(emb(0, xp="jax"), None, 1, mesh=mesh1(), score="hard_learner"),
        r"learner.image must hold at least one example",
    ),
    (
        "jax.JESTSelector",
        lambda: jj.JESTSelector(batch_size=1).select(
            jj.init_state(0), emb(0, xp="jax"), emb(0, xp="jax")
        ),
        r"learner.image must hold at least one example",
    ),
    (
        "jax.JESTSelector",
        lambda: jj.JESTSelector(batch_size=1).select_batch(
            jj.init_state(0), {}, emb(xp="jax"), emb(xp="jax")
        ),
        r"the batch must be a pytree with at least one array leaf, got none",
    ),
    (
        "jax.gather",
        lambda: jj.gather(jnp.zeros((0, 3)), jnp.zeros(1, jnp.int32)),
        r"indices must lie in \[0, 0\) \(the batch size\)",
    ),
    (
        "jax.gather_sharded",
        lambda: jj.gather_sharded({}, jnp.zeros(1, jnp.int32), mesh=mesh1()),
        r"the batch must be a pytree with at least one array leaf",
    ),
]


@pytest.mark.parametrize(("entry", "call", "match"), EMPTY_CASES, ids=[c[0] for c in EMPTY_CASES])
def test_empty_batches_are_refused_naming_the_argument(entry, call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_empty_inputs_that_have_a_meaning_are_accepted():
    # The loss of no pairs is an empty matrix, and elementwise scores of nothing are empty:
    # only selecting from nothing is an error.
    assert jestcore.sigmoid_loss_matrix(
        np.zeros((0, 3)), np.zeros((0, 3)), scale=1.0, bias=0.0
    ).shape == (
        0,
        0,
    )
    assert jestcore.learnability(np.zeros(0), np.zeros(0)).shape == (0,)
    assert jestcore.uniform(0, (0,), xp=np).shape == (0,)
    sub = jj.gather({"x": jnp.zeros((0, 3))}, jnp.zeros(0, jnp.int32))
    assert sub["x"].shape == (0, 3)


# ----------------------------------------------------------------------------- mixed namespaces


def _t(x: Any) -> Any:
    return torch.from_numpy(np.asarray(x).copy())


NAMESPACE_CASES: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    (
        "joint_select",
        lambda: jestcore.joint_select(jnp.asarray(S), 4, n_chunks=2, noise=np.zeros((2, N))),
        TypeError,
        r"scores, noise must be arrays of one array-API namespace",
    ),
    (
        "independent_select",
        lambda: jestcore.independent_select(_t(V), 3, noise=jnp.zeros(N)),
        TypeError,
        r"scores, noise must be arrays of one array-API namespace",
    ),
    (
        "joint_select_embeddings",
        lambda: jestcore.joint_select_embeddings(emb(), emb(xp="torch"), 4, n_chunks=2, seed=0),
        TypeError,
        r"learner.image, learner.text, reference.image, reference.text(, noise)? must be arrays "
        r"of one array-API namespace",
    ),
    (
        "joint_select_embeddings",
        lambda: jestcore.joint_select_embeddings(
            emb(xp="torch"), None, 4, n_chunks=2, score="hard_learner", seed=np.asarray(1)
        ),
        TypeError,
        r"seed must be a Python int or a 0-d integer array of the inputs' namespace",
    ),
    (
        "joint_select_embeddings",
        lambda: jestcore.joint_select_embeddings(
            emb(scale=_t(np.asarray(1.0))), None, 2, score="hard_learner", seed=0
        ),
        TypeError,
        r"scale must be a float or a 0-d floating array of the inputs' namespace",
    ),
    (
        "sigmoid_loss_matrix",
        lambda: jestcore.sigmoid_loss_matrix(E[0], E[1], scale=1.0, bias=jnp.asarray(0.0)),
        TypeError,
        r"bias must be a float or a 0-d floating array of the inputs' namespace",
    ),
    (
        "learnability",
        lambda: jestcore.learnability(jnp.asarray(S), S),
        TypeError,
        r"learner_loss, reference_loss must be arrays of one array-API namespace",
    ),
    (
        "batch_score",
        lambda: jestcore.batch_score(S, torch.tensor([0, 1])),
        TypeError,
        r"scores, indices must be arrays of one array-API namespace",
    ),
    (
        "batch_score_embeddings",
        lambda: jestcore.batch_score_embeddings(
            emb(), None, torch.tensor([0, 1]), score="hard_learner"
        ),
        TypeError,
        r"learner.image, learner.text, indices must be arrays of one array-API namespace",
    ),
    (
        "fold_in",
        lambda: jestcore.fold_in(jnp.uint32(1), torch.tensor(2)),
        TypeError,
        r"seed, data must be arrays of one array-API namespace",
    ),
    (
        "jax.joint_select",
        lambda: jj.joint_select(_t(S), 4, n_chunks=2, seed=0),
        TypeError,
        r"scores must be a JAX array \(or a NumPy array, which JAX converts\), got torch.Tensor",
    ),
    (
        "jax.joint_select",
        lambda: jj.joint_select(jnp.asarray(S), 4, n_chunks=2, noise=torch.zeros(2, N)),
        TypeError,
        r"noise must be a JAX array",
    ),
    (
        "jax.joint_select",
        lambda: jj.joint_select(jnp.asarray(S), 4, n_chunks=2, seed=torch.tensor(1)),
        TypeError,
        r"seed must be a Python int or a 0-d integer array of the inputs' namespace",
    ),
    (
        "jax.joint_select_embeddings",
        lambda: jj.joint_select_embeddings(emb(xp="jax"), emb(xp="torch"), 2, seed=0),
        TypeError,
        r"reference.image must be a JAX array",
    ),
    (
        "jax.joint_select_embeddings",
        lambda: jj.joint_select_embeddings(
            emb(xp="jax", scale=_t(np.asarray(1.0))), None, 2, score="hard_learner", seed=0
        ),
        TypeError,
        r"scale must be a float or a 0-d floating array of the inputs' namespace",
    ),
    (
        "jax.select_sharded",
        lambda: jj.select_sharded(emb(xp="torch"), None, 2, mesh=mesh1(), score="hard_learner"),
        TypeError,
        r"learner.image must be a JAX array",
    ),
    (
        "jax.JESTSelector",
        lambda: jj.JESTSelector(batch_size=2).select(jj.init_state(0), emb(xp="torch"), emb()),
        TypeError,
        r"learner.image must be a JAX array",
    ),
    (
        "jax.gather",
        lambda: jj.gather({"x": jnp.zeros(3)}, torch.tensor([0])),
        TypeError,
        r"indices must be a JAX array",
    ),
    (
        "jax.gather",
        lambda: jj.gather({"x": torch.zeros(3)}, jnp.array([0])),
        TypeError,
        r"batch\['x'\] must be a JAX array",
    ),
    (
        "jax.gather_sharded",
        lambda: jj.gather_sharded(jnp.zeros(4), torch.tensor([0]), mesh=mesh1()),
        TypeError,
        r"indices must be a JAX array",
    ),
]


def refusals(cases: list[Any]) -> Callable[..., None]:
    """A test of ``(entry, call, error, match)`` cases: each call raises ``error`` matching."""

    @pytest.mark.parametrize(("entry", "call", "error", "match"), cases, ids=[c[0] for c in cases])
    def test(entry, call, error, match):
        with pytest.raises(error, match=match):
            call()

    return test


test_mixed_namespaces_are_refused_naming_the_arguments = refusals(NAMESPACE_CASES)


def test_the_jax_adapter_converts_numpy_inputs_as_jax_does():
    got = jj.joint_select(S.astype(np.float32), 4, n_chunks=2, seed=3)
    expected = jj.joint_select(jnp.asarray(S, dtype=jnp.float32), 4, n_chunks=2, seed=3)
    assert isinstance(got, jax.Array)
    np.testing.assert_array_equal(got, expected)


# ----------------------------------------------------------------------------- mixed devices


def _meta(x: Any) -> Any:
    return torch.as_tensor(np.asarray(x)).to("meta")


TS, TV = _t(S), _t(V)
DEVICE_CASES: list[tuple[str, Callable[[], Any], str]] = [
    (
        "joint_select",
        lambda: jestcore.joint_select(TS, 4, n_chunks=2, noise=_meta(np.zeros((2, N)))),
        r"noise is on device meta but scores is on cpu: move them together",
    ),
    (
        "joint_select",
        lambda: jestcore.joint_select(TS, 4, n_chunks=2, seed=_meta(3)),
        r"seed is on device meta but scores is on cpu",
    ),
    (
        "independent_select",
        lambda: jestcore.independent_select(TV, 3, noise=_meta(np.zeros(N))),
        r"noise is on device meta but scores is on cpu",
    ),
    (
        "independent_select",
        lambda: jestcore.independent_select(TV, 3, seed=_meta(3)),
        r"seed is on device meta but scores is on cpu",
    ),
    (
        "joint_select_embeddings",
        lambda: jestcore.joint_select_embeddings(
            emb(xp="torch")._replace(text=_meta(E[1])), emb(xp="torch"), 4, n_chunks=2, seed=0
        ),
        r"learner.text is on device meta but learner.image is on cpu",
    ),
    (
        "joint_select_embeddings",
        lambda: jestcore.joint_select_embeddings(emb(xp="torch"), emb(xp="meta"), 4, seed=0),
        r"reference.image is on device meta but learner.image is on cpu",
    ),
    (
        "joint_select_embeddings",
        lambda: jestcore.joint_select_embeddings(
            emb(xp="torch", scale=_meta(2.0)), None, 2, score="hard_learner", seed=0
        ),
        r"learner.scale is on device meta but learner.image is on cpu",
    ),
    (
        "joint_select_embeddings",
        lambda: jestcore.joint_select_embeddings(
            None, emb(xp="torch", bias=_meta(2.0)), 2, score="easy_reference", seed=0
        ),
        r"reference.bias is on device meta but reference.image is on cpu",
    ),
    (
        "joint_select_embeddings",
        lambda: jestcore.joint_select_embeddings(
            emb(xp="torch"),
            None,
            2,
            n_chunks=1,
            score="hard_learner",
            noise=_meta(np.zeros((1, N))),
        ),
        r"noise is on device meta but learner.image is on cpu",
    ),
    (
        "joint_select_embeddings",
        lambda: jestcore.joint_select_embeddings(
            emb(xp="torch"), None, 2, n_chunks=1, score="hard_learner", seed=_meta(1)
        ),
        r"seed is on device meta but learner.image is on cpu",
    ),
    (
        "sigmoid_loss_matrix",
        lambda: jestcore.sigmoid_loss_matrix(_t(E[0]), _meta(E[1]), scale=1.0, bias=0.0),
        r"text is on device meta but image is on cpu",
    ),
    (
        "sigmoid_loss_matrix",
        lambda: jestcore.sigmoid_loss_matrix(_t(E[0]), _t(E[1]), scale=_meta(1.0), bias=0.0),
        r"scale is on device meta but image is on cpu",
    ),
    (
        "learnability",
        lambda: jestcore.learnability(TS, _meta(S)),
        r"reference_loss is on device meta but learner_loss is on cpu",
    ),
    (
        "batch_score",
        lambda: jestcore.batch_score(TS, _meta(np.array([0, 1]))),
        r"indices is on device meta but scores is on cpu",
    ),
    (
        "batch_score_embeddings",
        lambda: jestcore.batch_score_embeddings(
            emb(xp="torch"), None, _meta(np.array([0, 1])), score="hard_learner"
        ),
        r"indices is on device meta but learner.image is on cpu",
    ),
    (
        "fold_in",
        lambda: jestcore.fold_in(torch.tensor(1), _meta(2)),
        r"data is on device meta but seed is on cpu",
    ),
]


@pytest.mark.parametrize(("entry", "call", "match"), DEVICE_CASES, ids=[c[0] for c in DEVICE_CASES])
def test_mixed_devices_are_refused_naming_both_arguments(entry, call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_inputs_all_on_one_device_are_accepted_even_without_values():
    # meta tensors have a shape but no values: the static checks run, the value checks cannot,
    # and the result lives on the inputs' device.
    got = jestcore.joint_select(_meta(S), 4, n_chunks=2, seed=_meta(3))
    assert got.device.type == "meta" and got.shape == (4,)
    got = jestcore.joint_select_embeddings(emb(xp="meta"), emb(xp="meta"), 4, n_chunks=2, seed=0)
    assert got.device.type == "meta" and got.shape == (4,)
    with pytest.raises(ValueError, match=r"n_select must be between 1 and N = 6, got 7"):
        jestcore.joint_select(_meta(S), 7, n_chunks=2, seed=0)


# ----------------------------------------------------------------------------- dtypes and shapes


DTYPE_SHAPE_CASES: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    (
        "jax.joint_select",
        lambda: jj.joint_select(jnp.zeros((N, N), jnp.bool_), 2, n_chunks=1, seed=0),
        TypeError,
        r"scores must have a real floating dtype, got bool",
    ),
    (
        "jax.joint_select",
        lambda: jj.joint_select(jnp.zeros((N, N), jnp.complex64), 2, n_chunks=1, seed=0),
        TypeError,
        r"scores must have a real floating dtype, got complex64",
    ),
    (
        "jax.joint_select",
        lambda: jj.joint_select(jnp.zeros((N,)), 2, n_chunks=1, seed=0),
        ValueError,
        r"scores must be 2-D, got shape \(6,\)",
    ),
    (
        "jax.joint_select",
        lambda: jj.joint_select(jnp.zeros((N, N)), 2, n_chunks=1, noise=jnp.zeros((1, N), int)),
        TypeError,
        r"noise must have a real floating dtype",
    ),
    (
        "jax.joint_select",
        lambda: jj.joint_select(jnp.zeros((N, N)), 4, n_chunks=5, seed=0),
        ValueError,
        r"n_chunks must be between 1 and n_select, got 5",
    ),
    (
        "jax.joint_select",
        lambda: jj.joint_select(jnp.zeros((N, N)), 0, n_chunks=1, seed=0),
        ValueError,
        r"n_select must be between 1 and N = 6, got 0",
    ),
    (
        "jax.joint_select",
        lambda: jj.joint_select(jnp.zeros((N, N)), np.float32(2), n_chunks=1, seed=0),
        TypeError,
        r"n_select must be an int",
    ),
    (
        "jax.joint_select",
        lambda: jj.joint_select(jnp.zeros((N, N)), 2, n_chunks=1, seed=0, noise=jnp.zeros((1, N))),
        ValueError,
        r"exactly one source of randomness: .*; got seed, noise",
    ),
    (
        "jax.joint_select",
        lambda: jj.joint_select(jnp.zeros((N, N)), 2, n_chunks=1),
        ValueError,
        r"exactly one source of randomness: .*; got none",
    ),
    (
        "jax.joint_select_embeddings",
        lambda: jj.joint_select_embeddings(
            emb(xp="jax", text=jnp.zeros((N, 3), jnp.int32)), None, 2, score="hard_learner", seed=0
        ),
        TypeError,
        r"learner.text must have a real floating dtype, got int32",
    ),
    (
        "jax.joint_select_embeddings",
        lambda: jj.joint_select_embeddings(
            emb(xp="jax", image=jnp.zeros((N, 3, 1))), None, 2, score="hard_learner", seed=0
        ),
        ValueError,
        r"learner.image must be 2-D, got shape \(6, 3, 1\)",
    ),
    (
        "jax.joint_select_embeddings",
        lambda: jj.joint_select_embeddings(
            emb(xp="jax", text=jnp.zeros((N, 4))), None, 2, score="hard_learner", seed=0
        ),
        ValueError,
        r"learner.image and learner.text must have the same shape \(N, d\), got \(6, 3\) and "
        r"\(6, 4\)",
    ),
    (
        "jax.joint_select_embeddings",
        lambda: jj.joint_select_embeddings(emb(xp="jax"), emb(4, xp="jax"), 2, seed=0),
        ValueError,
        r"learner and reference must embed the same N examples, got N = 6 and 4",
    ),
    (
        "jax.joint_select_embeddings",
        lambda: jj.joint_select_embeddings(emb(xp="jax"), emb(xp="jax"), 2, n_chunks=3, seed=0),
        ValueError,
        r"n_chunks must be between 1 and n_select, got 3",
    ),
    (
        "jax.joint_select_embeddings",
        lambda: jj.joint_select_embeddings(
            emb(xp="jax"), emb(xp="jax"), 2, n_chunks=1, seed=0, block_size=0
        ),
        ValueError,
        r"block_size must be >= 1, got 0",
    ),
    (
        "jax.joint_select_embeddings",
        lambda: jj.joint_select_embeddings(
            emb(xp="jax"), emb(xp="jax"), 2, n_chunks=1, noise=jnp.zeros((2, N))
        ),
        ValueError,
        r"noise must have shape \(1, 6\), got \(2, 6\)",
    ),
    (
        "jax.joint_select_embeddings",
        lambda: jj.joint_select_embeddings(emb(xp="jax"), (1, 2), 2, n_chunks=1, seed=0),
        TypeError,
        r"reference must be a PairEmbeddings\(image, text, scale, bias\)",
    ),
    (
        "jax.select_sharded",
        lambda: jj.select_sharded(emb(xp="jax"), emb(7, xp="jax"), 2, mesh=mesh1(), seed=0),
        ValueError,
        r"learner and reference must embed the same N examples, got N = 6 and 7",
    ),
    (
        "jax.select_sharded",
        lambda: jj.select_sharded(
            emb(xp="jax"), emb(xp="jax"), 2, mesh=mesh1(), scope="local", n_chunks=3, seed=0
        ),
        ValueError,
        r"n_chunks must be between 1 and n_select / D \(per device\), got 3",
    ),
    (
        "jax.select_sharded",
        lambda: jj.select_sharded(emb(xp="jax"), emb(xp="jax"), 7, mesh=mesh1(), seed=0),
        ValueError,
        r"n_select must be between 1 and N = 6, got 7",
    ),
    (
        "jax.select_sharded",
        lambda: jj.select_sharded(emb(xp="jax"), emb(xp="jax"), 2, mesh=mesh1(), n_chunks=1),
        ValueError,
        r"exactly one source of randomness",
    ),
    (
        "jax.select_sharded",
        lambda: jj.select_sharded(emb(xp="jax"), emb(xp="jax"), 2, mesh="mesh", seed=0),
        TypeError,
        r"mesh must be a jax.sharding.Mesh, got str",
    ),
    (
        "jax.select_sharded",
        lambda: jj.select_sharded(emb(xp="jax"), emb(xp="jax"), 2, mesh=mesh1(), axis="x", seed=0),
        ValueError,
        r"axis must be one of the mesh's axes \('batch',\), got 'x'",
    ),
    (
        "jax.gather_sharded",
        lambda: jj.gather_sharded(jnp.zeros(4), jnp.array([0.0]), mesh=mesh1()),
        TypeError,
        r"indices must be a 1-D integer array",
    ),
    (
        "jax.gumbel_rows",
        lambda: jj.gumbel_rows(0, 2.0, 3),
        TypeError,
        r"n_rows must be an int, got float 2.0",
    ),
    (
        "jax.gumbel_rows",
        lambda: jj.gumbel_rows(0, 2, -1),
        ValueError,
        r"n must be between 0 and 2\*\*31 - 1, got -1",
    ),
    (
        "jax.gumbel_rows",
        lambda: jj.gumbel_rows(0, 2, 3, offset=jnp.zeros(2, jnp.int32)),
        TypeError,
        r"offset must be an int or a 0-d integer JAX array",
    ),
    (
        "jax.init_state",
        lambda: jj.init_state(None),
        TypeError,
        SEED_MSG + r", got None",
    ),
    (
        "hard_learner",
        lambda: jestcore.hard_learner(np.zeros(3, np.int8)),
        TypeError,
        r"learner_loss must have a real floating dtype, got int8",
    ),
    (
        "easy_reference",
        lambda: jestcore.easy_reference([1.0, 2.0]),
        TypeError,
        r"reference_loss must be arrays of one array-API namespace, got builtins.list",
    ),
    (
        "gumbel_noise",
        lambda: jestcore.gumbel_noise(0, (3,), xp=None),
        TypeError,
        r"xp must be an array-API namespace",
    ),
    (
        "uniform",
        lambda: jestcore.uniform(0, (3, -1), xp=np),
        ValueError,
        r"shape must be \(n,\) or \(rows, n\) of non-negative ints, got \(3, -1\)",
    ),
]


test_wrong_dtypes_shapes_and_ranges_are_refused = refusals(DTYPE_SHAPE_CASES)


def test_static_checks_also_run_under_jit():
    # Shapes, dtypes and options are static: they raise while tracing, as eagerly.
    spec = jax.jit(jestcore.joint_select, static_argnames=("n_select", "n_chunks", "greedy"))
    adapter = jax.jit(jj.joint_select, static_argnames=("n_select", "n_chunks", "greedy"))
    for fn in (spec, adapter):
        with pytest.raises(ValueError, match=r"n_select must be between 1 and N = 6, got 7"):
            fn(jnp.zeros((N, N)), n_select=7, n_chunks=1, seed=0)
        with pytest.raises(ValueError, match=r"scores must be a square"):
            fn(jnp.zeros((N, N + 1)), n_select=2, n_chunks=1, seed=0)
        with pytest.raises(TypeError, match=SEED_MSG):
            fn(jnp.zeros((N, N)), n_select=2, n_chunks=1, seed=jnp.zeros(2, jnp.uint32))
        with pytest.raises(ValueError, match=r"scores must hold at least one example"):
            fn(jnp.zeros((0, 0)), n_select=1, n_chunks=1, seed=0)


# ----------------------------------------------------------------------------- gain


def _torch_train(gain: Any) -> Any:
    from jestcore.adapters.torch import trainer as tt

    model = tt.DualEncoder(tt.ImageMLP(4, 8, 4), tt.BagOfWords(5, 4))
    images, tokens = np.zeros((10, 4), np.float32), np.zeros((10, 3), np.int64)
    return tt.train(model, images, tokens, steps=1, batch_size=2, method="uniform", gain=gain)


def _jax_train_config(gain: Any) -> Any:
    from jestcore.adapters.jax.trainer import TrainConfig

    return TrainConfig(steps=1, gain=gain)


def _demo_config(gain: Any) -> Any:
    from jestcore.adapters.demo.app import DemoConfig

    return DemoConfig(gain=gain)


def _torch_select_batch(gain: Any, **randomness: Any) -> Any:
    from jestcore.adapters.torch import select_batch

    x = torch.from_numpy(V)
    randomness = randomness or {"seed": 0}
    return select_batch(torch.arange(N), scores=x, batch_size=3, gain=gain, **randomness)


def _torch_selector(gain: Any) -> Any:
    from jestcore.adapters.torch import JESTSelector

    return JESTSelector(batch_size=2, gain=gain)


#: Every selection entry point that takes ``gain``: name -> call with that gain (seeded).
GAINED: dict[str, Callable[[Any], Any]] = {
    "joint_select": lambda g: jestcore.joint_select(S, 4, n_chunks=2, seed=0, gain=g),
    "independent_select": lambda g: jestcore.independent_select(V, 4, seed=0, gain=g),
    "joint_select_embeddings": lambda g: jestcore.joint_select_embeddings(
        emb(), emb(), 4, n_chunks=2, seed=0, gain=g
    ),
    "jax.joint_select": lambda g: jj.joint_select(jnp.asarray(S), 4, n_chunks=2, seed=0, gain=g),
    "jax.joint_select_embeddings": lambda g: jj.joint_select_embeddings(
        emb(xp="jax"), emb(xp="jax"), 4, n_chunks=2, seed=0, gain=g
    ),
    "jax.select_sharded": lambda g: jj.select_sharded(
        emb(xp="jax"), emb(xp="jax"), 4, mesh=mesh1(), n_chunks=2, seed=0, gain=g
    ),
    "jax.JESTSelector": lambda g: jj.JESTSelector(batch_size=2, gain=g),
    "jax.TrainConfig": _jax_train_config,
    "torch.select_batch": _torch_select_batch,
    "torch.JESTSelector": _torch_selector,
    "torch.train": _torch_train,
    "demo.DemoConfig": _demo_config,
}

BAD_GAINS = [
    (True, TypeError, r"gain must be a real number \(e.g. 100.0\), got bool True"),
    ("100", TypeError, r"gain must be a real number \(e.g. 100.0\), got str '100'"),
    (None, TypeError, r"gain must be a real number \(e.g. 100.0\), got NoneType None"),
    (np.asarray([1.0]), TypeError, r"gain must be a real number"),
    (0.0, ValueError, r"gain must be finite and > 0, got 0.0"),
    (-1, ValueError, r"gain must be finite and > 0, got -1"),
    (math.nan, ValueError, r"gain must be finite and > 0, got nan"),
    (math.inf, ValueError, r"gain must be finite and > 0, got inf"),
    (np.float32(-2.0), ValueError, r"gain must be finite and > 0, got -2.0"),
]


@pytest.mark.parametrize("entry", sorted(GAINED))
@pytest.mark.parametrize(("gain", "error", "match"), BAD_GAINS)
def test_every_selection_entry_point_refuses_every_kind_of_bad_gain(entry, gain, error, match):
    with pytest.raises(error, match=match):
        GAINED[entry](gain)


@pytest.mark.parametrize("entry", sorted(GAINED))
def test_every_selection_entry_point_accepts_numpy_and_integer_gains(entry):
    for gain in (np.float64(3.5), np.float32(0.5), 2, 1e-3):
        GAINED[entry](gain)


@pytest.mark.parametrize("bad", [0.0, True])
def test_gain_is_checked_even_when_greedy_ignores_it(bad):
    error = TypeError if bad is True else ValueError
    for call in (
        lambda: jestcore.joint_select(S, 4, n_chunks=2, greedy=True, gain=bad),
        lambda: jestcore.independent_select(V, 4, greedy=True, gain=bad),
        lambda: jestcore.joint_select_embeddings(
            emb(), emb(), 4, n_chunks=2, greedy=True, gain=bad
        ),
        lambda: _torch_select_batch(bad, greedy=True),
    ):
        with pytest.raises(error, match="gain"):
            call()


def test_a_gain_that_could_overflow_the_logits_is_refused_before_any_work():
    big = np.full((N, N), 1e36, np.float32)
    # 2 * 4 - 1 = 7 entries of 1e36 bound a logit: 7e36 fits float32, 100 * 7e36 does not
    jestcore.joint_select(big, 4, n_chunks=2, seed=0, gain=1.0)
    jestcore.joint_select(big, 4, n_chunks=2, greedy=True)  # greedy multiplies nothing
    msg = r"gain = 100 could overflow float32: the logits are bounded only by 7e\+36"
    with pytest.raises(ValueError, match=msg):
        jestcore.joint_select(big, 4, n_chunks=2, seed=0)
    with pytest.raises(ValueError, match=msg):
        jj.joint_select(jnp.asarray(big), 4, n_chunks=2, seed=0)
    with pytest.raises(ValueError, match=r"gain = 100 could overflow float32"):
        jestcore.independent_select(np.full(N, 1e37, np.float32), 2, seed=0)
    # float64 logits have room (explicit float64 noise makes float32 scores select in float64)
    noise = np.zeros((2, N))
    jestcore.joint_select(big, 4, n_chunks=2, noise=noise)
    # embeddings: |loss| <= |scale| * d * max|image| * max|text| + |bias| + 1 per pair
    huge = emb(scale=1e30)
    with pytest.raises(ValueError, match=r"gain = 100 could overflow float64"):
        jestcore.joint_select_embeddings(
            huge._replace(image=huge.image * 1e140, text=huge.text * 1e140), None, 4,
            n_chunks=2, score="hard_learner", seed=0,
        )  # fmt: skip
    jestcore.joint_select_embeddings(huge, None, 4, n_chunks=2, score="hard_learner", seed=0)
    f32 = PairEmbeddings(*(np.full((N, 3), 1e18, np.float32),) * 2, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"gain = 100 could overflow float32"):
        jestcore.joint_select_embeddings(f32, None, 4, n_chunks=2, score="hard_learner", seed=0)
    with pytest.raises(ValueError, match=r"gain = 100 could overflow float32"):
        jj.select_sharded(
            PairEmbeddings(*(jnp.asarray(f32.image),) * 2, 1.0, 0.0), None, 4, mesh=mesh1(),
            n_chunks=2, score="hard_learner", seed=0,
        )  # fmt: skip


def test_an_embedding_bound_beyond_the_inputs_dtype_is_recomputed_in_python_floats():
    # The one-read check forms the bound |scale| d max|image| max|text| in the inputs' dtype:
    # ~1e7 here, beyond float16, so it is recomputed exactly; the selection (in float32) runs.
    rng = np.random.default_rng(0)
    image, text = ((rng.normal(size=(64, 8)) * 100).astype(np.float16) for _ in range(2))
    kw: dict[str, Any] = dict(n_chunks=4, score="hard_learner", seed=0)
    got = jestcore.joint_select_embeddings(PairEmbeddings(image, text, 10.0, -1.0), None, 16, **kw)
    wide = PairEmbeddings(image.astype(np.float32), text.astype(np.float32), 10.0, -1.0)
    np.testing.assert_array_equal(got, jestcore.joint_select_embeddings(wide, None, 16, **kw))


# ----------------------------------------------------------------------------- NaN and inf


def with_bad(x: np.ndarray, *entries: tuple[tuple[int, ...], float]) -> np.ndarray:
    x = np.array(x, dtype=np.float32, copy=True)
    for index, value in entries:
        x[index] = value
    return x


# two bad entries each: the message names the first in row-major order, and its value
BAD_S = with_bad(S, ((4, 1), np.inf), ((2, 5), np.nan))
BAD_V = with_bad(V, ((5,), np.nan), ((3,), -np.inf))
BAD_NOISE = with_bad(np.zeros((2, N)), ((1, 4), np.nan), ((1, 3), -np.inf))
BAD_E = with_bad(E[2], ((5, 0), np.nan), ((3, 2), np.inf))


def non_finite_cases(xp: str) -> list[tuple[str, Callable[[], Any], str]]:
    c = lambda x: convert(x, xp)  # noqa: E731
    good = lambda: emb(xp=xp)  # noqa: E731
    return [
        (
            "joint_select",
            lambda: jestcore.joint_select(c(BAD_S), 4, n_chunks=2, seed=0),
            r"scores must be finite, but scores\[2, 5\] is nan",
        ),
        (
            "joint_select",
            lambda: jestcore.joint_select(
                c(S.astype(np.float32)), 4, n_chunks=2, noise=c(BAD_NOISE)
            ),
            r"noise must be finite, but noise\[1, 3\] is -inf",
        ),
        (
            "independent_select",
            lambda: jestcore.independent_select(c(BAD_V), 3, seed=0),
            r"scores must be finite, but scores\[3\] is -inf",
        ),
        (
            "independent_select",
            lambda: jestcore.independent_select(c(V.astype(np.float32)), 3, noise=c(BAD_NOISE[1])),
            r"noise must be finite, but noise\[3\] is -inf",
        ),
        *[
            (
                "joint_select_embeddings",
                lambda field=field: jestcore.joint_select_embeddings(
                    good()._replace(**({field[1]: c(BAD_E)} if field[0] == "learner" else {})),
                    good()._replace(**({field[1]: c(BAD_E)} if field[0] == "reference" else {})),
                    4,
                    n_chunks=2,
                    seed=0,
                ),
                rf"{field[0]}.{field[1]} must be finite, but {field[0]}.{field[1]}\[3, 2\] is inf",
            )
            for field in [
                ("learner", "image"),
                ("learner", "text"),
                ("reference", "image"),
                ("reference", "text"),
            ]
        ],
        (
            "joint_select_embeddings",
            lambda: jestcore.joint_select_embeddings(
                good(), good(), 4, n_chunks=2, noise=c(BAD_NOISE)
            ),
            r"noise must be finite, but noise\[1, 3\] is -inf",
        ),
        (
            "sigmoid_loss_matrix",
            lambda: jestcore.sigmoid_loss_matrix(c(E[0]), c(BAD_E), scale=1.0, bias=0.0),
            r"text must be finite, but text\[3, 2\] is inf",
        ),
        (
            "batch_score",
            lambda: jestcore.batch_score(c(BAD_S), c(np.array([0, 1]))),
            r"scores must be finite, but scores\[2, 5\] is nan",
        ),
        (
            "batch_score_embeddings",
            lambda: jestcore.batch_score_embeddings(
                good(), good()._replace(text=c(BAD_E)), c(np.array([0, 1]))
            ),
            r"reference.text must be finite, but reference.text\[3, 2\] is inf",
        ),
    ]


ADAPTER_NON_FINITE: list[tuple[str, Callable[[], Any], str]] = [
    (
        "jax.joint_select",
        lambda: jj.joint_select(jnp.asarray(BAD_S), 4, n_chunks=2, seed=0),
        r"scores must be finite, but scores\[2, 5\] is nan",
    ),
    (
        "jax.joint_select",
        lambda: jj.joint_select(jnp.asarray(S), 4, n_chunks=2, noise=jnp.asarray(BAD_NOISE)),
        r"noise must be finite, but noise\[1, 3\] is -inf",
    ),
    (
        "jax.joint_select_embeddings",
        lambda: jj.joint_select_embeddings(
            emb(xp="jax"), emb(xp="jax", image=jnp.asarray(BAD_E)), 4, n_chunks=2, seed=0
        ),
        r"reference.image must be finite, but reference.image\[3, 2\] is inf",
    ),
    (
        "jax.joint_select_embeddings",
        lambda: jj.joint_select_embeddings(
            emb(xp="jax"), emb(xp="jax"), 4, n_chunks=2, noise=jnp.asarray(BAD_NOISE)
        ),
        r"noise must be finite, but noise\[1, 3\] is -inf",
    ),
    (
        "jax.joint_select_embeddings",
        lambda: jj.joint_select_embeddings(
            emb(xp="jax", bias=jnp.asarray(np.inf)),
            None,
            4,
            n_chunks=2,
            score="hard_learner",
            seed=0,
        ),
        r"^learner\.bias must be finite, got inf",
    ),
    (
        "jax.select_sharded",
        lambda: jj.select_sharded(
            emb(xp="jax", text=jnp.asarray(BAD_E)),
            None,
            4,
            mesh=mesh1(),
            score="hard_learner",
            n_chunks=2,
            seed=0,
        ),
        r"learner.text must be finite, but learner.text\[3, 2\] is inf",
    ),
    (
        "jax.JESTSelector",
        lambda: jj.JESTSelector(batch_size=2, n_chunks=1).select(
            jj.init_state(0), emb(xp="jax", image=jnp.asarray(BAD_E)), emb(xp="jax")
        ),
        r"learner.image must be finite, but learner.image\[3, 2\] is inf",
    ),
]


@pytest.mark.parametrize("framework", ["numpy", "torch", "jax"])
def test_non_finite_values_are_refused_eagerly_at_the_first_bad_position(framework):
    for entry, call, match in non_finite_cases(framework):
        with pytest.raises(ValueError, match=match):
            call()
        assert entry in SPEC_CALLABLES


@pytest.mark.parametrize(
    ("entry", "call", "match"), ADAPTER_NON_FINITE, ids=[c[0] for c in ADAPTER_NON_FINITE]
)
def test_non_finite_values_are_refused_eagerly_by_the_jax_adapter(entry, call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_float16_scores_of_large_magnitude_are_finite_and_select_without_overflow():
    # float16 sums overflow at 65504; checks and logits accumulate in float32, so large but
    # finite float16 scores are neither refused nor turned into infinities.
    s = (np.random.default_rng(3).uniform(1, 2, (64, 64)) * 3e4).astype(np.float16)
    expected = jestcore.joint_select(s.astype(np.float32), 40, n_chunks=8, greedy=True)
    for scores in (s, torch.from_numpy(s), jnp.asarray(s)):
        got = jestcore.joint_select(scores, 40, n_chunks=8, greedy=True)
        np.testing.assert_array_equal(np.asarray(got), expected)
    np.testing.assert_array_equal(
        jj.joint_select(jnp.asarray(s), 40, n_chunks=8, greedy=True), expected
    )
    v = s[0]
    np.testing.assert_array_equal(
        jestcore.independent_select(v, 10, greedy=True),
        jestcore.independent_select(v.astype(np.float32), 10, greedy=True),
    )


# ----------------------------------------------------------------------------- under tracing


def select_with_non_finite(
    scores: np.ndarray, n_select: int, n_chunks: int, noise: np.ndarray | None, gain: float
) -> list[int]:
    """Literal Algorithm 1 where a non-finite perturbed logit ranks after every finite one.

    Each chunk ranks ``gain * logit + noise`` (scores of small integers and eighths keep every
    product and sum exact in float32 for the gains used here).

    Plain Python floats, re-summing every chunk; ties (including all non-finite candidates,
    which rank alike) go to the lower index. Selected items are excluded.
    """
    n = scores.shape[0]
    selected: list[int] = []
    for k, size in enumerate(oracle.split_chunks(n_select, n_chunks)):
        keys = []
        for m in range(n):
            if m in selected:
                continue
            logit = float(scores[m, m]) + sum(
                float(scores[j, m]) + float(scores[m, j]) for j in selected
            )
            logit *= gain
            if noise is not None:
                logit += float(noise[k, m])
            keys.append((0, -logit, m) if math.isfinite(logit) else (1, 0.0, m))
        selected += [m for _, _, m in sorted(keys)[:size]]
    return selected


@st.composite
def non_finite_problems(draw: st.DrawFn):
    """Small-integer scores (sums are exact in float32) with a few NaN/inf entries."""
    n = 10  # one shape: each compiles once
    n_select = draw(st.sampled_from([3, 7, 10]))
    n_chunks = draw(st.sampled_from([1, 2, 3]))
    scores = np.asarray(draw(st.lists(st.integers(-8, 8), min_size=n * n, max_size=n * n)))
    scores = scores.reshape(n, n).astype(np.float32)
    bad = st.tuples(
        st.integers(0, n - 1), st.integers(0, n - 1), st.sampled_from([np.nan, np.inf, -np.inf])
    )
    for i, j, value in draw(st.lists(bad, max_size=4)):
        scores[i, j] = value
    noise = None
    if draw(st.booleans()):
        eighths = st.lists(st.integers(-64, 64), min_size=n_chunks * n, max_size=n_chunks * n)
        noise = (np.asarray(draw(eighths)) / 8).reshape(n_chunks, n).astype(np.float32)
        if draw(st.booleans()):
            noise[draw(st.integers(0, n_chunks - 1)), draw(st.integers(0, n - 1))] = np.nan
    return scores, n_select, n_chunks, noise


STATIC_MATRIX = ("n_select", "n_chunks", "gain", "greedy")
SPEC_JIT = jax.jit(jestcore.joint_select, static_argnames=STATIC_MATRIX)
ADAPTER_JIT = jax.jit(jj.joint_select, static_argnames=STATIC_MATRIX)


@settings(max_examples=25)
@given(non_finite_problems(), st.sampled_from([1.0, 4.0, 100.0]))
@example(  # a NaN on the diagonal, and a pair whose sum is inf - inf = NaN
    (
        with_bad(np.eye(10), ((4, 4), np.nan), ((2, 7), np.inf), ((7, 2), -np.inf)),
        10,
        3,
        None,
    ),
    100.0,
)
def test_under_jit_non_finite_candidates_rank_after_every_finite_one(problem, gain):
    scores, n_select, n_chunks, noise = problem
    expected = select_with_non_finite(scores, n_select, n_chunks, noise, gain)
    randomness = {"greedy": True} if noise is None else {"noise": jnp.asarray(noise)}
    for name, fn in (("spec", SPEC_JIT), ("adapter", ADAPTER_JIT)):
        got = fn(jnp.asarray(scores), n_select=n_select, n_chunks=n_chunks, gain=gain, **randomness)
        assert np.asarray(got).tolist() == expected, name


# Dynamo warns once that it traces through array_api_compat's functools.lru_cache helpers.
@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
def test_under_torch_compile_non_finite_candidates_rank_after_every_finite_one():
    scores = with_bad(np.arange(64.0).reshape(8, 8) % 7 - 3, ((5, 5), np.nan), ((1, 6), np.inf))
    noise = (np.arange(24.0).reshape(3, 8) % 5 / 4).astype(np.float32)
    noise[2, 0] = np.nan
    compiled = torch.compile(
        lambda s, g: jestcore.joint_select(s, 8, n_chunks=3, noise=g),
        fullgraph=True,
        backend="aot_eager",
    )
    got = compiled(torch.from_numpy(scores), torch.from_numpy(noise))
    assert got.tolist() == select_with_non_finite(scores, 8, 3, noise, 100.0)


@pytest.mark.parametrize("where", ["spec", "adapter"])
def test_under_jit_non_finite_embeddings_come_last_in_index_order(where):
    # Rows 2 and 6 of the learner's text are not finite: those candidates' own losses are not
    # finite, so they rank last; they are picked only once every finite candidate is taken, and
    # after that every logit is non-finite, so the rest follow in index order.
    rng = np.random.default_rng(4)
    text = rng.standard_normal((12, 5)).astype(np.float32)
    text[2, 1], text[6, 4] = np.nan, -np.inf
    learner = PairEmbeddings(
        jnp.asarray(rng.standard_normal((12, 5)), jnp.float32), jnp.asarray(text), 2.0, 0.5
    )
    fn = {"spec": jestcore.joint_select_embeddings, "adapter": jj.joint_select_embeddings}[where]
    select = jax.jit(fn, static_argnames=("n_select", "n_chunks", "score"))
    finite = [i for i in range(12) if i not in (2, 6)]
    for n_select, n_chunks in ((12, 4), (10, 3), (7, 2)):
        got = np.asarray(
            select(
                learner,
                None,
                n_select=n_select,
                n_chunks=n_chunks,
                score="hard_learner",
                seed=jnp.uint32(1),
            )
        ).tolist()
        assert len(set(got)) == n_select
        assert set(got[: min(n_select, 10)]) <= set(finite)
        assert got[10:] == [2, 6][: max(0, n_select - 10)]
    # a non-finite scale makes every logit non-finite: all tie, so the selection is 0, 1, 2...
    finite_text = jnp.asarray(np.where(np.isfinite(text), text, 0.0))
    nan_scale = learner._replace(text=finite_text, scale=jnp.float32(np.nan))
    got = select(nan_scale, None, n_select=5, n_chunks=2, score="hard_learner", seed=jnp.uint32(1))
    assert np.asarray(got).tolist() == [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------- coverage


#: The spec's selection functions (those that take ``gain``): each must be in :data:`GAINED`.
SELECTING_SPEC = {"joint_select", "independent_select", "joint_select_embeddings"}
SELECTING_ADAPTER = {"joint_select", "joint_select_embeddings", "select_sharded", "JESTSelector"}

COVERED_SPEC = (
    {k for k in SEEDED if "." not in k and "/" not in k}
    | {c[0] for c in EMPTY_CASES + NAMESPACE_CASES + DEVICE_CASES + DTYPE_SHAPE_CASES}
    | {c[0] for c in non_finite_cases("numpy")}
)
COVERED_ADAPTER = {
    k.split(".")[1]
    for k in [*SEEDED, *(c[0] for c in EMPTY_CASES + NAMESPACE_CASES + DTYPE_SHAPE_CASES)]
    if k.startswith("jax.")
}


def test_the_matrix_covers_every_public_entry_point():
    assert SPEC_CALLABLES <= COVERED_SPEC, SPEC_CALLABLES - COVERED_SPEC
    assert ADAPTER_CALLABLES <= COVERED_ADAPTER, ADAPTER_CALLABLES - COVERED_ADAPTER


def test_the_gain_matrix_covers_every_selection_entry_point():
    assert SELECTING_SPEC <= set(GAINED)
    assert {f"jax.{n}" for n in SELECTING_ADAPTER} <= set(GAINED)
    # every public callable that takes a gain is in the gain matrix
    import inspect

    for name in SPEC_CALLABLES:
        if "gain" in inspect.signature(getattr(jestcore, name)).parameters:
            assert name in GAINED, name
    for name in ADAPTER_CALLABLES:
        if "gain" in inspect.signature(getattr(jj, name)).parameters:
            assert f"jax.{name}" in GAINED, name


# ----------------------------------------------------------------------------- two JAX devices
# The checks below run in a child process with two simulated CPU devices (the suite keeps one);
# each reports "ok" or its traceback.


def _two_devices():
    d0, d1 = jax.devices()[:2]
    return d0, d1


def _raises(error: type[Exception], fn: Callable[[], Any], *fragments: str) -> str:
    try:
        fn()
    except error as e:
        for f in fragments:
            assert f in str(e), (f, str(e))
        return str(e)
    raise AssertionError(f"expected {error.__name__} containing {fragments}")


def check_spec_refuses_arrays_committed_to_two_devices():
    d0, d1 = _two_devices()
    s0 = jax.device_put(S.astype(np.float32), d0)
    on1 = lambda x: jax.device_put(np.asarray(x), d1)  # noqa: E731
    msg = f"is on device {d1} but"
    learner = PairEmbeddings(
        jax.device_put(E[0].astype(np.float32), d0), on1(E[1].astype(np.float32)), 1.0, 0.0
    )
    noise1 = on1(np.zeros((2, N), np.float32))
    for api in (jestcore, jj):  # the JAX adapter's selections are aliases of the spec's
        _raises(
            ValueError,
            lambda api=api: api.joint_select(s0, 4, n_chunks=2, noise=noise1),
            "noise " + msg,
            "scores is on",
        )
        _raises(
            ValueError,
            lambda api=api: api.joint_select(s0, 4, n_chunks=2, seed=on1(np.uint32(3))),
            "seed " + msg,
        )
        _raises(
            ValueError,
            lambda api=api: api.joint_select_embeddings(
                learner, None, 2, n_chunks=1, score="hard_learner", seed=0
            ),
            "learner.text " + msg,
            "learner.image is on",
        )
    _raises(
        ValueError,
        lambda: jestcore.independent_select(s0[0], 2, noise=on1(np.zeros(N, np.float32))),
        "noise " + msg,
    )
    _raises(
        ValueError,
        lambda: jestcore.sigmoid_loss_matrix(learner.image, learner.text, scale=1.0, bias=0.0),
        "text " + msg,
    )
    _raises(
        ValueError,
        lambda: jestcore.fold_in(jax.device_put(np.uint32(1), d0), on1(np.int32(2))),
        "data " + msg,
    )
    # arrays not committed to a device go wherever the computation runs: accepted
    s1 = on1(S.astype(np.float32))
    got = jestcore.joint_select(s1, 4, n_chunks=2, noise=jnp.zeros((2, N)))
    assert got.devices() == {d1}
    got = jestcore.joint_select(s1, 4, n_chunks=2, seed=jnp.uint32(3))
    assert got.devices() == {d1}
    np.testing.assert_array_equal(got, jestcore.joint_select(S, 4, n_chunks=2, seed=3))


def check_adapter_refuses_arrays_committed_to_two_devices():
    # its selections are the spec's (checked above); the selector and the sharded selection
    d0, d1 = _two_devices()
    on1 = lambda x: jax.device_put(np.asarray(x), d1)  # noqa: E731
    msg = f"is on device {d1} but"
    reference = PairEmbeddings(on1(E[2].astype(np.float32)), on1(E[3].astype(np.float32)), 1.0, 0.0)
    learner0 = PairEmbeddings(
        jax.device_put(E[0].astype(np.float32), d0),
        jax.device_put(E[1].astype(np.float32), d0),
        1.0,
        0.0,
    )
    _raises(
        ValueError,
        lambda: jj.JESTSelector(batch_size=2, n_chunks=1).select(
            jj.init_state(0), learner0, reference
        ),
        "reference.image " + msg,
        "learner.image is on",
    )
    mesh = jax.make_mesh((2,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))
    _raises(
        ValueError,
        lambda: jj.select_sharded(
            learner0._replace(text=on1(E[1].astype(np.float32))),
            None,
            2,
            mesh=mesh,
            n_chunks=1,
            score="hard_learner",
            seed=0,
        ),
        f"learner.text is on devices ['{d1}'] but learner.image is on devices ['{d0}']",
    )
    # the selector's state is not committed: a step on device 1 runs there
    idx, _ = jj.JESTSelector(batch_size=2, n_chunks=1).select(
        jj.init_state(0), reference, reference
    )
    assert idx.devices() == {d1}


def check_sharded_selection_under_jit_ranks_non_finite_candidates_last():
    mesh = jax.make_mesh((2,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))
    rng = np.random.default_rng(9)
    image = rng.standard_normal((12, 4)).astype(np.float32)
    image[[1, 8]] = np.nan  # one bad candidate on each device
    learner = PairEmbeddings(
        jnp.asarray(image), jnp.asarray(rng.standard_normal((12, 4)), jnp.float32), 3.0, 0.0
    )
    select = jax.jit(
        jj.select_sharded, static_argnames=("n_select", "mesh", "scope", "n_chunks", "score")
    )
    got = np.asarray(
        select(
            learner,
            None,
            n_select=12,
            mesh=mesh,
            scope="global",
            n_chunks=4,
            score="hard_learner",
            seed=jnp.uint32(2),
        )
    ).tolist()
    assert sorted(got) == list(range(12)) and got[10:] == [1, 8], got
    got = np.asarray(
        select(
            learner,
            None,
            n_select=12,
            mesh=mesh,
            scope="local",
            n_chunks=2,
            score="hard_learner",
            seed=jnp.uint32(2),
        )
    ).tolist()
    assert sorted(got[:6]) == list(range(6)) and got[5] == 1, got
    assert sorted(got[6:]) == list(range(6, 12)) and got[11] == 8, got


CHECKS = xla_devices.check_names(globals())


@pytest.fixture(scope="module")
def two_device_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("devices") / "results.json"
    return xla_devices.run_checks(__file__, 2, out)


@pytest.mark.parametrize("name", CHECKS)
def test_on_two_simulated_devices(two_device_results, name):
    assert two_device_results[name] == "ok", two_device_results[name]


if __name__ == "__main__":
    xla_devices.child_main(globals())
