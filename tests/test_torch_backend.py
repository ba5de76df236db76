"""The native PyTorch backend: exact top-k ties, softplus accuracy, devices, torch.compile.

``test_backends.py`` checks conformance and the primitives on every backend; this file covers
what is specific to PyTorch: both ``top_k`` paths under heavy ties, the ``F.softplus``
threshold, tensors created on the input's device (``meta``; CUDA when present), lazy detection,
and selection under ``torch.compile(fullgraph=True)`` matching eager.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import array_api_compat
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from jestcore.backends import torch as tb

import jestcore

# Dynamo warns once that it traces through array_api_compat's functools.lru_cache helpers.
pytestmark = pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")

#: Extra devices that exist here: ``meta`` always (shapes only), CUDA when present.
DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


def literal_top_k(x: np.ndarray, k: int) -> list[int]:
    return sorted(range(x.shape[0]), key=lambda i: (-x[i], i))[:k]


tie_values = st.one_of(
    st.integers(-2, 2).map(float),  # many ties
    st.just(-np.inf),  # already-selected items
    st.floats(-1e3, 1e3, width=32),
)


@given(
    st.lists(tie_values, min_size=1, max_size=300),
    st.data(),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_top_k_ties_go_to_the_lower_index_on_both_paths(xs, data, dtype):
    x = np.asarray(xs, dtype=np.float64)
    # Mostly small k (the topk + tie repair path, k < N / 4), sometimes any k (stable sort).
    k = data.draw(st.one_of(st.integers(1, max(1, len(xs) // 4)), st.integers(1, len(xs))))
    t = torch.tensor(x, dtype=dtype)
    got = tb.top_k(t, k)
    assert got.dtype == torch.int64 and got.shape == (k,)
    assert got.tolist() == literal_top_k(t.double().numpy(), k)


def test_top_k_repairs_ties_straddling_the_threshold():
    # All equal: topk may return any k of them; the contract wants 0..k-1.
    for n, k in ((1000, 7), (4096, 100), (257, 1)):
        assert tb.top_k(torch.zeros(n), k).tolist() == list(range(k))
    x = torch.zeros(1000)
    x[[900, 10, 500]] = 5.0
    x[[3, 999, 4]] = 2.0
    assert tb.top_k(x, 6).tolist() == [10, 500, 900, 3, 4, 999]
    assert tb.top_k(x, 8).tolist() == [10, 500, 900, 3, 4, 999, 0, 1]
    assert tb.top_k(x, 0).shape == (0,)


def test_softplus_threshold_is_exact_in_float32_and_avoided_in_float64():
    # F.softplus returns x above 20; exact in float32 (the dropped term is < half an ulp), not in
    # float64, which takes logaddexp instead.
    x64 = np.concatenate([np.linspace(-40, 40, 8001), [19.99, 20.0, 20.01, 30.0, 88.0]])
    exact = np.logaddexp(0.0, x64)
    got64 = tb.softplus(torch.from_numpy(x64)).numpy()
    np.testing.assert_allclose(got64, exact, rtol=2 * np.finfo(np.float64).eps, atol=0)
    x32 = x64.astype(np.float32)
    got32 = tb.softplus(torch.from_numpy(x32)).numpy()
    exact32 = np.logaddexp(0.0, x32.astype(np.float64))
    # within 2 ulp of float32 of the float64 value (an ulp is eps * |value| here)
    np.testing.assert_allclose(got32, exact32, rtol=2 * np.finfo(np.float32).eps, atol=1e-38)
    assert tb.softplus(torch.tensor([25.0])).item() == 25.0  # float32: the threshold is exact
    for dtype in (torch.float16, torch.bfloat16):
        out = tb.softplus(torch.linspace(-30, 30, 61, dtype=dtype))
        assert out.dtype == dtype and bool(torch.isfinite(out).all())


def test_sum_softplus_matches_a_literal_sum():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(7, 33))
    expected = np.logaddexp(0.0, 12.5 * m - 3.0).sum(axis=0)
    got = tb.sum_softplus(torch.from_numpy(m), 12.5, -3.0).numpy()
    np.testing.assert_allclose(got, expected, rtol=8 * np.finfo(np.float64).eps)
    scale = torch.tensor(12.5, dtype=torch.float64)  # 0-d tensors work like floats
    got_t = tb.sum_softplus(torch.from_numpy(m), scale, torch.tensor(-3.0, dtype=torch.float64))
    np.testing.assert_allclose(got_t.numpy(), expected, rtol=8 * np.finfo(np.float64).eps)


def test_is_lazy_for_meta_tensors_and_under_compile():
    assert tb.is_lazy(torch.zeros(3)) is False
    assert tb.is_lazy(torch.zeros(3, device="meta")) is True
    assert tb.is_lazy(3.0) is False

    def f(x):
        return x + 1 if tb.is_lazy(x) else x - 1

    assert torch.compile(f, fullgraph=True, backend="eager")(torch.zeros(2)).tolist() == [1, 1]


def _problem(n: int = 48, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    emb = [rng.normal(size=(n, d)).astype(np.float32) / np.sqrt(d) for _ in range(4)]
    scores = rng.normal(size=(n, n)).astype(np.float32)
    return emb, scores


def _select_all(scores, emb, seed, noise_m, noise_v):
    """Every selection path in one function (one compiled graph)."""
    learner = jestcore.PairEmbeddings(emb[0], emb[1], 10.0, -5.0)
    reference = jestcore.PairEmbeddings(emb[2], emb[3], 10.0, -5.0)
    return (
        jestcore.joint_select(scores, 12, n_chunks=3, seed=seed),
        jestcore.joint_select(scores, 12, n_chunks=3, noise=noise_m),
        jestcore.joint_select(scores, 12, n_chunks=3, greedy=True),
        jestcore.joint_select_embeddings(learner, reference, 12, n_chunks=3, seed=seed),
        jestcore.joint_select_embeddings(
            learner, None, 12, n_chunks=2, score="hard_learner", seed=seed, block_size=5
        ),
        jestcore.independent_select(torch.diagonal(scores), 12, seed=seed),
        jestcore.independent_select(torch.diagonal(scores), 12, noise=noise_v),
    )


@pytest.mark.parametrize("device", DEVICES)
def test_every_tensor_is_created_on_the_input_device(device):
    emb, scores = _problem()
    n = scores.shape[0]
    on = [torch.from_numpy(e).to(device) for e in emb]
    s = torch.from_numpy(scores).to(device)
    seed = torch.tensor(3, dtype=torch.int64, device=device)
    noise_m = torch.zeros(3, n, device=device)
    out = _select_all(s, on, seed, noise_m, torch.zeros(n, device=device))
    for idx in out:
        assert idx.device.type == device and idx.dtype == torch.int64 and idx.shape == (12,)
    xp = array_api_compat.array_namespace(s)
    assert jestcore.uniform(seed, (2, n), xp=xp, device=s.device).device.type == device
    if device != "meta":  # real values: the same as on the CPU
        cpu = _select_all(
            torch.from_numpy(scores),
            [torch.from_numpy(e) for e in emb],
            torch.tensor(3),
            torch.zeros(3, n),
            torch.zeros(n),
        )
        for a, b in zip(out, cpu, strict=True):
            assert a.cpu().tolist() == b.tolist()


def _inputs(seed_value: int):
    emb, scores = _problem(seed=seed_value)
    n = scores.shape[0]
    g = jestcore.gumbel_noise(seed_value + 100, (3, n), xp=np)
    return (
        torch.from_numpy(scores),
        [torch.from_numpy(e) for e in emb],
        torch.tensor(seed_value, dtype=torch.int64),
        torch.from_numpy(g),
        torch.from_numpy(g[0].copy()),
    )


def test_selection_under_compile_fullgraph_matches_eager():
    # aot_eager: Dynamo must capture every path as one graph (fullgraph=True: no break, no
    # data-dependent guard) and AOTAutograd functionalises it; the inductor test below compiles.
    compiled = torch.compile(_select_all, fullgraph=True, backend="aot_eager")
    for seed_value in (0, 1):
        args = _inputs(seed_value)
        for e, c in zip(_select_all(*args), compiled(*args), strict=True):
            assert torch.equal(e, c)


@pytest.mark.slow
# importing inductor defines torch.utils.mkldnn's TorchScript modules, which warn
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_selection_under_inductor_matches_eager():
    # The smallest graph that has every part (generator, top-k with tie repair, the streaming
    # update): inductor compiles for a minute or more on a CPU.
    def small(emb, seed):
        learner = jestcore.PairEmbeddings(emb[0], emb[1], 10.0, -5.0)
        # gain 1: noise that matters (at the default 100 the seeds nearly agree)
        return jestcore.joint_select_embeddings(
            learner, None, 12, n_chunks=2, score="hard_learner", seed=seed, gain=1.0
        )

    compiled = torch.compile(small, fullgraph=True)  # the default backend: inductor C++
    for seed_value in (0, 1, 2):  # later seeds reuse the compiled graph
        _, emb, seed, _, _ = _inputs(seed_value)
        # equal, including the noise from the generator's wrapping int32 arithmetic
        assert torch.equal(small(emb, seed), compiled(emb, seed))
    # the noise decides: the seeds select differently
    assert len({tuple(compiled(_inputs(0)[1], torch.tensor(s)).tolist()) for s in range(3)}) == 3


def test_compiled_selection_never_checks_values():
    # Eagerly a NaN score is refused; compiled, values are not read (no host sync), and the
    # documented behaviour holds: non-finite candidates are never selected.
    s = torch.randn(10, 10, generator=torch.Generator().manual_seed(0))
    s[4, 4] = float("nan")
    with pytest.raises(ValueError, match="must be finite"):
        jestcore.joint_select(s, 3, n_chunks=1, greedy=True)
    f = torch.compile(
        lambda s: jestcore.joint_select(s, 9, n_chunks=1, greedy=True),
        fullgraph=True,
        backend="aot_eager",
    )
    assert 4 not in f(s).tolist()


def test_first_call_may_be_compiled_after_importing_the_adapter():
    # The registry imports the native backend on first use; inside torch.compile that import
    # would break the graph, so importing the adapter imports the backend up front.
    code = textwrap.dedent(
        """
        import torch
        import jestcore
        import jestcore.adapters.torch

        f = torch.compile(
            lambda s: jestcore.joint_select(s, 3, n_chunks=1, greedy=True),
            fullgraph=True,
            backend="eager",
        )
        s = torch.eye(6) * torch.arange(6.0)
        print(f(s).tolist())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-W", "ignore:Dynamo detected a call", "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[5, 4, 3]"
