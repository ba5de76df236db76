"""The PyTorch adapter's entry points refuse bad input before any work, naming the argument.

One table of cases per entry point (``select_batch``, ``JESTSelector``, ``score_forward``,
``precompute_reference_embeddings`` / ``EmbeddingCache``, ``exchange_selected``): each case is
a call, the exception type, the argument its message must name and a pattern for what was
expected. Then the behaviour where values cannot be read: under ``torch.compile`` non-finite
candidates are not refused but rank after every finite one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np
import pytest
import torch
from jestcore.adapters.torch import (
    CacheError,
    EmbeddingCache,
    JESTSelector,
    exchange_selected,
    precompute_reference_embeddings,
    score_forward,
    select_batch,
    take_batch,
)

import jestcore

N, D = 10, 3


def pair(n: int = N, *, device: str = "cpu", dtype=torch.float32, scale=5.0, bias=-1.0):
    gen = torch.Generator().manual_seed(n)
    image, text = (torch.randn(n, D, generator=gen, dtype=dtype).to(device) for _ in range(2))
    return jestcore.PairEmbeddings(image, text, scale, bias)


def with_entry(p, field: str, index: tuple[int, ...], value: float):
    t = getattr(p, field).clone()
    t[index] = value
    return p._replace(**{field: t})


def sel(learner: Any = "pair", reference: Any = "pair", *, batch: Any = None, **kw) -> Any:
    """``select_batch`` with valid defaults, overridden by the case."""
    learner = pair() if isinstance(learner, str) else learner
    reference = pair() if isinstance(reference, str) else reference
    options = {"batch_size": 4, "n_chunks": 2, "seed": 0} | kw
    return select_batch(torch.arange(N) if batch is None else batch, learner, reference, **options)


def scores_sel(scores: Any, **kw) -> Any:
    options = {"batch_size": 4, "n_chunks": 2, "seed": 0} | kw
    return select_batch(torch.arange(N), scores=scores, **options)


nan, inf = float("nan"), float("inf")
losses = torch.linspace(0.0, 1.0, N)

SELECT_BATCH: list[tuple[str, Callable[[], Any], type, str, str]] = [
    # wrong ndim / shape
    ("image 1-D", lambda: sel(pair()._replace(image=torch.zeros(N))), ValueError,
     "learner.image", r"must be 2-D, got shape \(10,\)"),
    ("image/text shapes", lambda: sel(reference=pair()._replace(text=torch.zeros(N, D + 1))),
     ValueError, "reference.image and reference.text", r"same shape \(N, d\), got \(10, 3\)"),
    ("losses 2-D", lambda: sel(torch.zeros(N, 1), torch.zeros(N, 1)), ValueError, "learner",
     r"must be 1-D, got shape \(10, 1\)"),
    ("losses a list", lambda: sel([0.0] * N, losses), TypeError, "learner",
     "PairEmbeddings.* or a 1-D tensor of per-example losses, got list"),
    ("scores 3-D", lambda: scores_sel(torch.zeros(N, N, 1)), ValueError, "scores",
     r"must be 1-D, got shape \(10, 10, 1\)"),
    ("scores not square", lambda: scores_sel(torch.zeros(N, N + 1)), ValueError, "scores",
     r"square \(N, N\) matrix, got shape \(10, 11\)"),
    ("scores not square, independent", lambda: scores_sel(torch.zeros(N, N + 1),
                                                          method="independent"),
     ValueError, "scores", r"square \(N, N\) matrix, got \(10, 11\)"),
    ("scores a list", lambda: scores_sel([0.0] * N), TypeError, "scores",
     "arrays of one array-API namespace, got builtins.list"),
    ("losses as NumPy", lambda: sel(losses.numpy(), losses.numpy()), TypeError, "learner",
     "a 1-D tensor of per-example losses, got ndarray"),
    ("scores as NumPy", lambda: scores_sel(torch.zeros(N, N).numpy(), method="independent"),
     TypeError, "scores", "torch tensors, got arrays of .*numpy"),
    ("noise shape", lambda: sel(seed=None, noise=torch.zeros(3, N)), ValueError, "noise",
     r"shape \(2, 10\), got \(3, 10\)"),
    ("noise ndim", lambda: sel(seed=None, noise=torch.zeros(N)), ValueError, "noise",
     r"shape \(2, 10\), got \(10,\)"),
    ("batch 0-d", lambda: sel(batch=torch.tensor(1.0)), ValueError, "batch",
     "first \\(example\\) dimension"),
    ("batch leaves differ", lambda: sel(batch={"a": torch.zeros(N), "b": torch.zeros(N - 1)}),
     ValueError, "batch['b']", "same first dimension"),
    ("batch without tensors", lambda: sel(batch={"a": None}), TypeError, "batch",
     "no tensor inside"),
    # different N
    ("learner N != reference N", lambda: sel(pair(), pair(N + 1)), ValueError,
     "reference", "outputs for 11 examples but the batch has 10"),
    ("outputs N != batch N", lambda: sel(batch=torch.arange(N + 2)), ValueError, "learner",
     "outputs for 10 examples but the batch has 12"),
    ("scores N != batch N", lambda: scores_sel(torch.zeros(N + 1)), ValueError, "scores",
     "outputs for 11 examples but the batch has 10"),
    # n_select and n_chunks out of range
    ("batch_size 0", lambda: sel(batch_size=0), ValueError, "batch_size",
     "between 1 and N = 10, got 0"),
    ("batch_size > N", lambda: sel(batch_size=N + 1), ValueError, "batch_size",
     "between 1 and N = 10, got 11"),
    ("batch_size float", lambda: sel(batch_size=2.0), TypeError, "batch_size", "an int"),
    ("batch_size bool", lambda: sel(batch_size=True), TypeError, "batch_size", "an int"),
    ("both sizes", lambda: sel(filter_ratio=0.5), ValueError, "batch_size",
     "exactly one of batch_size=.* or filter_ratio"),
    ("no size", lambda: sel(batch_size=None), ValueError, "filter_ratio",
     "exactly one of batch_size=.* or filter_ratio"),
    ("filter_ratio 1", lambda: sel(batch_size=None, filter_ratio=1.0), ValueError,
     "filter_ratio", r"in \[0, 1\), got 1.0"),
    ("filter_ratio nan", lambda: sel(batch_size=None, filter_ratio=nan), ValueError,
     "filter_ratio", r"in \[0, 1\), got nan"),
    ("filter_ratio str", lambda: sel(batch_size=None, filter_ratio="0.5"), TypeError,
     "filter_ratio", r"a float in \[0, 1\)"),
    ("n_chunks 0", lambda: sel(n_chunks=0), ValueError, "n_chunks", ">= 1, got 0"),
    ("n_chunks float", lambda: sel(n_chunks=2.0), TypeError, "n_chunks", "an int"),
    # non-floating
    ("integer image", lambda: sel(pair()._replace(image=torch.ones(N, D, dtype=torch.int64))),
     TypeError, "learner.image", "floating dtype, got torch.int64"),
    ("integer losses", lambda: sel(losses.long(), losses), TypeError, "learner",
     "floating dtype, got torch.int64"),
    ("bool scores", lambda: scores_sel(torch.ones(N, dtype=torch.bool)), TypeError, "scores",
     "floating dtype, got torch.bool"),
    ("complex scores", lambda: scores_sel(torch.ones(N, dtype=torch.complex64)), TypeError,
     "scores", "floating dtype, got torch.complex64"),
    ("integer noise", lambda: sel(seed=None, noise=torch.zeros(2, N, dtype=torch.int32)),
     TypeError, "noise", "floating dtype"),
    ("scale 1-D", lambda: sel(pair(scale=torch.ones(2))), TypeError, "scale",
     r"a float or a 0-d floating array .*got Tensor of shape \(2,\)"),
    ("bias a string", lambda: sel(reference=pair(bias="0")), TypeError, "bias",
     "a float or a 0-d floating array"),
    # NaN / inf: the argument and the first bad position
    ("nan image", lambda: sel(with_entry(pair(), "image", (3, 1), nan)), ValueError,
     "learner.image", r"must be finite, but learner.image\[3, 1\] is nan"),
    ("inf text", lambda: sel(reference=with_entry(pair(), "text", (9, 2), -inf)), ValueError,
     "reference.text", r"must be finite, but reference.text\[9, 2\] is -inf"),
    ("first of several", lambda: sel(with_entry(with_entry(pair(), "text", (7, 0), nan),
                                                "text", (2, 2), inf)),
     ValueError, "learner.text", r"learner.text\[2, 2\] is inf"),
    ("nan losses", lambda: sel(losses, losses.index_fill(0, torch.tensor([6]), nan)),
     ValueError, "reference", r"must be finite, but reference\[6\] is nan"),
    ("inf scores", lambda: scores_sel(torch.zeros(N, N).index_fill(1, torch.tensor([4]), inf)),
     ValueError, "scores", r"scores\[0, 4\] is inf"),
    ("nan noise", lambda: sel(seed=None, noise=torch.zeros(2, N).index_fill(1,
                                                                           torch.tensor([5]), nan)),
     ValueError, "noise", r"noise\[0, 5\] is nan"),
    ("nan scale", lambda: sel(pair(scale=nan)), ValueError, "scale", "must be finite, got nan"),
    ("inf bias tensor", lambda: sel(reference=pair(bias=torch.tensor(inf))), ValueError,
     "bias", "must be finite, got inf"),
    # mixed devices
    ("meta vs cpu embeddings", lambda: sel(pair(device="meta")), ValueError, "reference.image",
     "on device cpu but learner.image is on meta"),
    ("meta vs cpu losses", lambda: sel(losses.to("meta"), losses), ValueError, "reference",
     "on device cpu but learner is on meta"),
    ("meta scale", lambda: sel(pair(scale=torch.tensor(2.0, device="meta"))), ValueError,
     "learner.scale", "on device meta but learner.image is on cpu"),
    ("meta seed", lambda: sel(seed=torch.tensor(1, device="meta")), ValueError, "seed",
     "on device meta but learner.image is on cpu"),
    ("meta noise", lambda: sel(seed=None, noise=torch.zeros(2, N, device="meta")), ValueError,
     "noise", "on device meta but learner.image is on cpu"),
    # sources of randomness
    ("seed and greedy", lambda: sel(greedy=True), ValueError, "seed",
     "exactly one source of randomness.*got seed, greedy=True"),
    ("seed and noise", lambda: sel(noise=torch.zeros(2, N)), ValueError, "noise",
     "exactly one source of randomness.*got seed, noise"),
    ("no randomness", lambda: sel(seed=None), ValueError, "seed",
     "exactly one source of randomness.*got none"),
    ("greedy 1", lambda: sel(seed=None, greedy=1), TypeError, "greedy", "a bool, got 1"),
    # invalid seeds
    ("seed -1", lambda: sel(seed=-1), ValueError, "seed", r"int in \[0, 2\*\*32\).*got -1"),
    ("seed 2**32", lambda: sel(seed=2**32), ValueError, "seed", "got 4294967296"),
    ("seed float", lambda: sel(seed=1.5), TypeError, "seed", "got 1.5"),
    ("seed bool", lambda: sel(seed=True), TypeError, "seed", "got True"),
    ("seed str", lambda: sel(seed="1"), TypeError, "seed", "got '1'"),
    ("seed 1-D tensor", lambda: sel(seed=torch.tensor([1])), TypeError, "seed",
     r"0-d integer array, got an array of shape \(1,\)"),
    ("seed float tensor", lambda: sel(seed=torch.tensor(1.0)), TypeError, "seed",
     "dtype torch.float32"),
    ("seed bool tensor", lambda: sel(seed=torch.tensor(True)), TypeError, "seed",
     "dtype torch.bool"),
    # empty batches
    ("empty embeddings", lambda: sel(pair(0), pair(0), batch=torch.arange(0)), ValueError,
     "batch", r"at least one example, got an empty super-batch \(N = 0\)"),
    ("empty scores", lambda: select_batch(torch.zeros(0), scores=torch.zeros(0), batch_size=1,
                                          seed=0), ValueError, "batch", "at least one example"),
    ("empty with filter_ratio", lambda: sel(pair(0), pair(0), batch=torch.arange(0),
                                            batch_size=None, filter_ratio=0.5),
     ValueError, "batch", "at least one example"),
    # options
    ("score", lambda: sel(score="hardest"), ValueError, "score", "one of .*got 'hardest'"),
    ("method", lambda: sel(method="greedy"), ValueError, "method", "one of .*got 'greedy'"),
    ("scope", lambda: sel(scope="world"), ValueError, "scope", "one of .*got 'world'"),
    ("exchange", lambda: sel(exchange="fast"), ValueError, "exchange", "one of .*got 'fast'"),
    ("block_size 0", lambda: sel(block_size=0), ValueError, "block_size", ">= 1, got 0"),
    ("block_size float", lambda: sel(block_size=1.0), TypeError, "block_size", "an int"),
    ("missing reference", lambda: sel(reference=None), ValueError, "reference",
     'score="learnability" needs the reference\'s outputs'),
    ("scores and models", lambda: select_batch(torch.arange(N), losses, losses, scores=losses,
                                               batch_size=2, seed=0),
     ValueError, "scores", "either scores=... or learner/reference outputs"),
    ("pair and losses", lambda: sel(pair(), losses), TypeError, "learner and reference",
     "both be PairEmbeddings or both be losses"),
]  # fmt: skip


def cases(table):
    return pytest.mark.parametrize(
        ("call", "error", "argument", "expected"),
        [pytest.param(*c[1:], id=c[0]) for c in table],
    )


def check(call, error, argument, expected):
    with pytest.raises(error, match=expected) as info:
        call()
    assert argument in str(info.value), f"{argument!r} not named in: {info.value}"
    assert type(info.value) is error or issubclass(type(info.value), error)


@cases(SELECT_BATCH)
def test_select_batch_refuses(call, error, argument, expected):
    check(call, error, argument, expected)


def test_valid_edge_cases_are_accepted():
    assert sel().indices.shape == (4,)
    # finite values whose sum overflows: the one-pass check falls back to the exact search
    huge = pair()._replace(image=torch.full((N, D), 3e38), text=torch.zeros(N, D))
    assert not torch.isfinite(huge.image.sum())
    assert sel(huge).indices.shape == (4,)
    # a concrete 0-d tensor seed follows the int rule, [0, 2**32) (only traced ones wrap)
    assert sel(seed=torch.tensor(2**32 - 1)).indices.shape == (4,)
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*32\)"):
        sel(seed=torch.tensor(-1))
    assert sel(seed=2**32 - 1, batch_size=N, n_chunks=N).indices.sort().values.tolist() == list(
        range(N)
    )
    one = sel(pair(1), pair(1), batch=torch.arange(1), batch_size=1, n_chunks=1)
    assert one.indices.tolist() == [0]


def selector(**kw):
    return JESTSelector(**({"batch_size": 4, "n_chunks": 2} | kw))


good_state = selector().state_dict()

SELECTOR = [
    ("both sizes", lambda: selector(filter_ratio=0.5), ValueError, "batch_size",
     "exactly one of batch_size"),
    ("no size", lambda: JESTSelector(), ValueError, "filter_ratio", "exactly one of"),
    ("batch_size 0", lambda: selector(batch_size=0), ValueError, "batch_size", ">= 1, got 0"),
    ("batch_size float", lambda: selector(batch_size=4.0), TypeError, "batch_size", "an int"),
    ("filter_ratio -0.1", lambda: JESTSelector(filter_ratio=-0.1), ValueError, "filter_ratio",
     r"in \[0, 1\)"),
    ("n_chunks 0", lambda: selector(n_chunks=0), ValueError, "n_chunks", ">= 1, got 0"),
    ("n_chunks float", lambda: selector(n_chunks=2.5), TypeError, "n_chunks", "an int"),
    ("score", lambda: selector(score="easy"), ValueError, "score", "one of"),
    ("method", lambda: selector(method="x"), ValueError, "method", "one of"),
    ("scope", lambda: selector(scope="x"), ValueError, "scope", "one of"),
    ("exchange", lambda: selector(exchange="x"), ValueError, "exchange", "one of"),
    ("seed -1", lambda: selector(seed=-1), ValueError, "seed",
     r"between 0 and 2\*\*32 - 1, got -1"),
    ("seed 2**32", lambda: selector(seed=2**32), ValueError, "seed", "got 4294967296"),
    ("seed float", lambda: selector(seed=3.0), TypeError, "seed", "an int, got float 3.0"),
    ("seed None", lambda: selector(seed=None), TypeError, "seed", "got NoneType None"),
    ("seed bool", lambda: selector(seed=False), TypeError, "seed", "an int, got False"),
    ("warmup -1", lambda: selector(warmup_steps=-1), ValueError, "warmup_steps", ">= 0"),
    ("warmup float", lambda: selector(warmup_steps=1.0), TypeError, "warmup_steps", "an int"),
    ("block_size 0", lambda: selector(block_size=0), ValueError, "block_size", ">= 1"),
    ("state not a dict", lambda: selector().load_state_dict([1]), ValueError, "state",
     "a dict from JESTSelector.state_dict"),
    ("state keys", lambda: selector().load_state_dict({"step": 1}), ValueError, "state",
     r"keys 'step', 'seed' and 'config', got dict with keys \['step'\]"),
    ("state config", lambda: selector().load_state_dict(good_state | {"config": 3}), ValueError,
     "state['config']", "must be a dict, got int"),
    ("state other config", lambda: selector(n_chunks=3).load_state_dict(good_state), ValueError,
     "n_chunks", r"different config \(saved, current\): n_chunks=2, 3"),
    ("state step -1", lambda: selector().load_state_dict(good_state | {"step": -1}), ValueError,
     "state['step']", ">= 0, got -1"),
    ("state step float", lambda: selector().load_state_dict(good_state | {"step": 1.0}),
     TypeError, "state['step']", "an int, got float 1.0"),
    ("state seed", lambda: selector().load_state_dict(good_state | {"seed": 2**40}), ValueError,
     "state['seed']", r"between 0 and 2\*\*32 - 1, got 1099511627776"),
    ("call: batch too small", lambda: selector(batch_size=20)(torch.arange(N), pair(), pair()),
     ValueError, "batch_size", "between 1 and N = 10, got 20"),
    ("call: nan learner", lambda: selector()(torch.arange(N), with_entry(pair(), "text",
                                                                         (1, 1), nan), pair()),
     ValueError, "learner.text", r"learner.text\[1, 1\] is nan"),
    ("call: empty batch in warm-up", lambda: selector(warmup_steps=1)(torch.zeros(0)),
     ValueError, "batch", "at least one example"),
]  # fmt: skip


@cases(SELECTOR)
def test_selector_refuses(call, error, argument, expected):
    check(call, error, argument, expected)


def test_a_refused_call_does_not_advance_the_selector():
    s = selector()
    with pytest.raises(ValueError, match="finite"):
        s(torch.arange(N), with_entry(pair(), "image", (0, 0), nan), pair())
    assert s.step == 0
    assert s(torch.arange(N), pair(), pair()).indices.shape == (4,) and s.step == 1


def model(x):
    return x.sum(dim=1)


SCORE_FORWARD = [
    ("score_batch_size 0", lambda: score_forward(model, torch.ones(3, 2), score_batch_size=0),
     ValueError, "score_batch_size", ">= 1, got 0"),
    ("score_batch_size float", lambda: score_forward(model, torch.ones(3, 2),
                                                     score_batch_size=1.5),
     TypeError, "score_batch_size", "an int, got float 1.5"),
    ("score_batch_size bool", lambda: score_forward(model, torch.ones(3, 2),
                                                    score_batch_size=True),
     TypeError, "score_batch_size", "an int, got True"),
    ("forward not callable", lambda: score_forward(model, torch.ones(3, 2), forward="flexi"),
     TypeError, "forward", "a callable .*got str"),
    ("model not callable", lambda: score_forward(3, torch.ones(3, 2)), TypeError, "model",
     "callable, got int"),
    ("eval_mode", lambda: score_forward(model, torch.ones(3, 2), eval_mode="yes"), TypeError,
     "eval_mode", "a bool, got 'yes'"),
    ("empty batch", lambda: score_forward(model, torch.ones(0, 2)), ValueError, "batch",
     r"at least one example, got an empty batch \(N = 0\)"),
    ("no tensors", lambda: score_forward(model, {"x": None}), TypeError, "batch",
     "no tensor inside"),
    ("leaves differ", lambda: score_forward(model, (torch.ones(3, 2), torch.ones(4))),
     ValueError, "batch[1]", "same first dimension"),
]  # fmt: skip


@cases(SCORE_FORWARD)
def test_score_forward_refuses(call, error, argument, expected):
    check(call, error, argument, expected)


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, D)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        e = self.lin(x)
        return jestcore.PairEmbeddings(e, e, 3.0, -1.0)


def rows(n: int = 8, start: int = 0):
    return [(torch.arange(start, start + n), torch.ones(n, 4))]


def pre(path, **kw):
    options = {"progress": False} | kw
    return precompute_reference_embeddings(
        options.pop("model", Encoder()), options.pop("loader", rows()), path, **options
    )


CACHE = [
    ("model not a module", lambda p: pre(p, model=lambda x: x), TypeError, "model",
     "torch.nn.Module, got function"),
    ("dtype bfloat16", lambda p: pre(p, dtype=torch.bfloat16), TypeError, "dtype",
     "float16, torch.float32 or torch.float64.*no bfloat16"),
    ("dtype int", lambda p: pre(p, dtype=torch.int32), TypeError, "dtype", "got torch.int32"),
    ("part_size 0", lambda p: pre(p, part_size=0), ValueError, "part_size", ">= 1, got 0"),
    ("part_size float", lambda p: pre(p, part_size=2.5), TypeError, "part_size", "an int"),
    ("score_batch_size 0", lambda p: pre(p, score_batch_size=0), ValueError,
     "score_batch_size", ">= 1, got 0"),
    ("score_batch_size bool", lambda p: pre(p, score_batch_size=True), TypeError,
     "score_batch_size", "an int, got True"),
    ("overwrite str", lambda p: pre(p, overwrite="yes"), TypeError, "overwrite", "a bool"),
    ("progress int", lambda p: pre(p, progress=1), TypeError, "progress", "a bool"),
    ("path int", lambda p: pre(3), TypeError, "path", "str or os.PathLike folder, got int"),
    ("path a file", lambda p: (p.write_text("x"), pre(p)), ValueError, "path",
     "must be a folder, but .* is a file"),
    ("loader int", lambda p: pre(p, loader=3), TypeError, "loader", "iterable of batches"),
    ("ids not callable", lambda p: pre(p, ids=[1, 2]), TypeError, "ids", "a callable or None"),
    ("forward not callable", lambda p: pre(p, forward=1), TypeError, "forward", "callable"),
    ("config not JSON", lambda p: pre(p, config={"f": object()}), TypeError, "config",
     "JSON-serialisable"),
    ("empty loader", lambda p: pre(p, loader=[]), ValueError, "loader", "yielded no examples"),
    ("float ids", lambda p: pre(p, loader=[(torch.zeros(8), torch.ones(8, 4))]), TypeError,
     "ids(batch)", "1-D sequence of integer example ids, got float32"),
    ("ids count", lambda p: pre(p, loader=[(torch.arange(7), torch.ones(8, 4))]), ValueError,
     "batch[0]", "same first dimension .*got batch\\[0\\]: 7, batch\\[1\\]: 8"),
    ("repeated ids", lambda p: pre(p, loader=rows() + rows(4, 6)), CacheError, "ids",
     r"unique over the dataset; repeated: \[6, 7\]"),
    ("forward output", lambda p: pre(p, forward=lambda m, b: "x"), TypeError, "forward",
     "PairEmbeddings.* or a tensor of per-example values, got str"),
    ("batch layout", lambda p: pre(p, loader=[torch.ones(8, 4)]), TypeError, "batch",
     r"\(ids, inputs\)"),
    ("no fingerprint", lambda p: (pre(p), EmbeddingCache(p)), TypeError, "fingerprint",
     "exactly one of fingerprint=... or model=..."),
    ("both fingerprints", lambda p: (pre(p), EmbeddingCache(p, fingerprint="0", model=Encoder())),
     TypeError, "fingerprint", "exactly one of"),
    ("no cache", lambda p: EmbeddingCache(p, fingerprint="0"), CacheError, "meta.json",
     "is missing"),
    ("other fingerprint", lambda p: (pre(p), EmbeddingCache(p, fingerprint="0" * 64)),
     CacheError, "fingerprint", "different model, config or dtype"),
    ("lookup unknown id", lambda p: pre(p).lookup([3, 99]), KeyError, "ids",
     r"1 of 2 ids are not in the cache .*\[99\]"),
    ("lookup float ids", lambda p: pre(p).lookup(torch.zeros(2)), TypeError, "ids",
     "integer example ids, got float32"),
    ("lookup 2-D ids", lambda p: pre(p).lookup(torch.zeros(2, 2, dtype=torch.int64)), TypeError,
     "ids", r"1-D sequence of integer example ids, got int64 \(2, 2\)"),
]  # fmt: skip


@cases(CACHE)
def test_cache_refuses(call, error, argument, expected, tmp_path):
    check(lambda: call(tmp_path / "cache"), error, argument, expected)


def test_cache_sizes_follow_the_int_rule_of_score_forward(tmp_path):
    # NumPy integers are ints here as in score_forward, which the cache's forward pass calls
    model = Encoder()
    plain = pre(tmp_path / "a", model=model, part_size=3, score_batch_size=2)
    numpy_sized = pre(
        tmp_path / "b", model=model, part_size=np.int64(3), score_batch_size=np.int32(2)
    )
    ids = torch.arange(8)
    for a, b in zip(plain.lookup(ids), numpy_sized.lookup(ids), strict=True):
        torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=0, atol=0)


def test_cache_checks_arguments_before_touching_the_folder(tmp_path):
    # overwrite=True with a bad argument must not destroy the existing cache
    cache = pre(tmp_path / "c")
    before = sorted(f.name for f in (tmp_path / "c").iterdir())
    for bad in ({"part_size": 0}, {"dtype": torch.bfloat16}, {"progress": None}):
        with pytest.raises((TypeError, ValueError)):
            pre(tmp_path / "c", overwrite=True, **bad)
    assert sorted(f.name for f in (tmp_path / "c").iterdir()) == before
    assert len(EmbeddingCache(tmp_path / "c", fingerprint=cache.fingerprint)) == 8


EXCHANGE = [
    ("exchange", lambda: exchange_selected(torch.zeros(4), torch.tensor([0, 1]), 4,
                                           exchange="fast"),
     ValueError, "exchange", "one of"),
    ("string leaf", lambda: exchange_selected({"s": ["a"] * 4}, torch.tensor([0]), 4),
     TypeError, "batch['s']", "must be a tensor"),
    ("n_local mismatch", lambda: exchange_selected(torch.zeros(4), torch.tensor([0, 1]), 5),
     ValueError, "n_local", "the batch's number of examples 4, got 5"),
    ("n_local float", lambda: exchange_selected(torch.zeros(4), torch.tensor([0, 1]), 4.0),
     TypeError, "n_local", "an int, got float"),
    ("empty batch", lambda: exchange_selected(torch.zeros(0), torch.tensor([0]), 0),
     ValueError, "batch", "at least one example"),
    ("float indices", lambda: exchange_selected(torch.zeros(4), torch.tensor([0.0, 1.0]), 4),
     TypeError, "global_indices", "integer tensor, got dtype torch.float32"),
    ("list indices", lambda: exchange_selected(torch.zeros(4), [0, 1], 4), TypeError,
     "global_indices", "integer tensor, got list"),
    ("2-D indices", lambda: exchange_selected(torch.zeros(4), torch.tensor([[0, 1]]), 4),
     ValueError, "global_indices", r"1-D.*got shape \(1, 2\)"),
    ("no indices", lambda: exchange_selected(torch.zeros(4), torch.zeros(0, dtype=torch.int64),
                                             4),
     ValueError, "global_indices", "positive multiple"),
    ("index too large", lambda: exchange_selected(torch.zeros(4), torch.tensor([0, 4]), 4),
     ValueError, "global_indices", r"positions in \[0, 4\).*global_indices\[1\] is 4"),
    ("negative index", lambda: exchange_selected(torch.zeros(4), torch.tensor([-1]), 4),
     ValueError, "global_indices", r"global_indices\[0\] is -1"),
]  # fmt: skip


@cases(EXCHANGE)
def test_exchange_selected_refuses(call, error, argument, expected):
    check(call, error, argument, expected)


def test_exchange_selected_on_one_process_takes_the_rows():
    batch = {"x": torch.arange(12.0).reshape(6, 2), "m": torch.arange(6) % 2 == 0}
    got = exchange_selected(batch, torch.tensor([5, 0, 3]), 6, exchange="exact")
    assert got["x"].tolist() == [[10.0, 11.0], [0.0, 1.0], [6.0, 7.0]]
    assert got["m"].tolist() == [False, True, False]


TAKE = [
    ("index too large", lambda: take_batch({"x": torch.zeros(N)}, torch.tensor([0, N])),
     ValueError, "indices", r"positions in \[0, 10\) \(the batch's 10 examples\), but "
     r"indices\[1\] is 10"),
    ("negative index", lambda: take_batch(torch.zeros(N), torch.tensor([3, -1])), ValueError,
     "indices", r"indices\[1\] is -1"),
    ("float indices", lambda: take_batch(torch.zeros(N), torch.tensor([1.0])), TypeError,
     "indices", "integer tensor, got dtype torch.float32"),
    ("list indices", lambda: take_batch(torch.zeros(N), [1]), TypeError, "indices",
     "integer tensor, got list"),
    ("2-D indices", lambda: take_batch(torch.zeros(N), torch.zeros(1, 1, dtype=torch.int64)),
     ValueError, "indices", r"1-D, got shape \(1, 1\)"),
    ("strings past the end", lambda: take_batch(["a"] * 3, torch.tensor([3])), ValueError,
     "indices", r"\[0, 3\)"),
]  # fmt: skip


@cases(TAKE)
def test_take_batch_refuses(call, error, argument, expected):
    check(call, error, argument, expected)


# ----------------------------------------------------------------------------- torch.compile

BAD = (2, 7, 10)  # candidates with a NaN or an infinity in one of their embeddings
M, CHUNK_SIZE = 12, 3


def poisoned():
    gen = torch.Generator().manual_seed(3)
    learner, reference = (
        jestcore.PairEmbeddings(
            torch.randn(M, D, generator=gen, dtype=torch.float64),
            torch.randn(M, D, generator=gen, dtype=torch.float64),
            4.0,
            -2.0,
        )
        for _ in range(2)
    )
    learner = with_entry(learner, "image", (BAD[0], 1), nan)
    reference = with_entry(reference, "text", (BAD[1], 0), inf)
    learner = with_entry(learner, "text", (BAD[2], 2), -inf)
    xp = array_api_compat.array_namespace(learner.image)
    noise = jestcore.gumbel_noise(9, (M // CHUNK_SIZE, M), xp=xp)
    return learner, reference, noise.to(torch.float64)


def select_everything(learner, reference, noise, seed):
    n_chunks = M // CHUNK_SIZE
    return (
        jestcore.joint_select_embeddings(learner, reference, M, n_chunks=n_chunks, noise=noise),
        jestcore.joint_select_embeddings(learner, reference, M, n_chunks=n_chunks, seed=seed),
        jestcore.joint_select_embeddings(learner, reference, M, n_chunks=n_chunks, greedy=True),
    )


# array_api_compat resolves namespaces through an lru_cache, which Dynamo traces through
@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
def test_non_finite_candidates_rank_last_under_torch_compile():
    learner, reference, noise = poisoned()
    seed = torch.tensor(4)
    # eagerly, the first non-finite value is refused, naming it
    with pytest.raises(ValueError, match=r"learner.image\[2, 1\] is nan"):
        select_everything(learner, reference, noise, seed)
    # compiled, values are not read: the selection runs, and every finite candidate comes first
    compiled = torch.compile(select_everything, fullgraph=True, backend="aot_eager")
    by_noise, by_seed, by_greedy = compiled(learner, reference, noise, seed)
    finite = [i for i in range(M) if i not in BAD]
    for got in (by_noise, by_seed, by_greedy):
        assert sorted(got[: len(finite)].tolist()) == finite
        assert got[len(finite) :].tolist() == list(BAD)  # tied last, lower index first
    # and the finite candidates are chosen exactly as if the others were absent
    keep = torch.tensor(finite)
    sub = [m._replace(image=m.image[keep], text=m.text[keep]) for m in (learner, reference)]
    n_chunks = len(finite) // CHUNK_SIZE
    alone = jestcore.joint_select_embeddings(
        *sub, len(finite), n_chunks=n_chunks, noise=noise[:n_chunks, keep]
    )
    assert by_noise[: len(finite)].tolist() == keep[alone].tolist()
    alone = jestcore.joint_select_embeddings(*sub, len(finite), n_chunks=n_chunks, greedy=True)
    assert by_greedy[: len(finite)].tolist() == keep[alone].tolist()


def test_select_batch_on_meta_tensors_reads_no_values():
    # Meta tensors have no values: the adapter's finiteness check is skipped, not failed.
    learner = pair(device="meta")
    got = select_batch(
        {"x": torch.empty(N, 2, device="meta")}, learner, learner, batch_size=4, n_chunks=2, seed=0
    )
    assert got.indices.device.type == "meta" and got.batch["x"].shape == (4, 2)
