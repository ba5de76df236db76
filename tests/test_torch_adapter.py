"""The PyTorch adapter: select_batch on nested batches, JESTSelector, the scoring pass."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from jestcore.adapters.torch import (
    JESTSelector,
    batch_size_of,
    concat_batches,
    score_forward,
    select_batch,
    take_batch,
)

import jestcore

N, D = 40, 6
RTOL = 4 * torch.finfo(torch.float32).eps ** 0.5  # float32 results, dtype-fit tolerance


def pair(gen: torch.Generator, n: int = N, scale: float = 10.0, bias: float = -5.0):
    image, text = (torch.randn(n, D, generator=gen) / D**0.5 for _ in range(2))
    return jestcore.PairEmbeddings(image, text, scale, bias)


def np_pair(p):
    return tuple(np.asarray(x, dtype=np.float64) if torch.is_tensor(x) else x for x in p)


def matching_loss(p) -> np.ndarray:
    """Literal per-example loss of matching pairs: -log sigmoid(scale <i, t> + bias)."""
    image, text, scale, bias = np_pair(p)
    return np.logaddexp(0.0, -(scale * np.einsum("nd,nd->n", image, text) + bias))


class Pair(NamedTuple):
    image: torch.Tensor
    caption: list


@dataclasses.dataclass
class Example:
    x: torch.Tensor
    extra: dict
    flag: bool = True


def nested_batch(n: int = N):
    ids = torch.arange(n)
    return Example(
        x=ids.float()[:, None].repeat(1, 3),
        extra={
            "pair": Pair(ids * 10, [f"caption {i}" for i in range(n)]),
            "labels": [ids % 3, (ids * 2).to(torch.int32)],
            "numpy": np.arange(n) * 7,
            "mask": ids % 2 == 0,
        },
    )


def assert_batch_is(sub, idx):
    idx = idx.tolist()
    assert sub.x[:, 0].tolist() == [float(i) for i in idx]
    assert sub.extra["pair"].image.tolist() == [10 * i for i in idx]
    assert sub.extra["pair"].caption == [f"caption {i}" for i in idx]
    assert isinstance(sub.extra["pair"], Pair) and isinstance(sub.extra["labels"], list)
    assert sub.extra["labels"][0].tolist() == [i % 3 for i in idx]
    assert sub.extra["labels"][1].dtype == torch.int32
    assert sub.extra["numpy"].tolist() == [7 * i for i in idx]
    assert sub.extra["mask"].tolist() == [i % 2 == 0 for i in idx]
    assert sub.flag is True


def test_select_batch_from_embeddings_is_joint_select_embeddings():
    gen = torch.Generator().manual_seed(0)
    learner, reference = pair(gen), pair(gen)
    batch = nested_batch()
    got = select_batch(batch, learner, reference, batch_size=8, n_chunks=4, seed=11)
    expected = jestcore.joint_select_embeddings(learner, reference, 8, n_chunks=4, seed=11)
    assert torch.equal(got.indices, expected)
    assert_batch_is(got.batch, got.indices)
    # stats: mean per-example learnability of the matching pairs, selected and overall
    per_example = matching_loss(learner) - matching_loss(reference)
    idx = got.indices.numpy()
    np.testing.assert_allclose(got.stats["score_all"].item(), per_example.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        got.stats["score_selected"].item(), per_example[idx].mean(), rtol=1e-5
    )
    assert got.stats["score_selected"].item() > got.stats["score_all"].item()


def test_select_batch_from_per_example_losses_is_independent_select():
    gen = torch.Generator().manual_seed(1)
    learner_loss, reference_loss = torch.rand(N, generator=gen), torch.rand(N, generator=gen)
    for score, scores in (
        ("learnability", learner_loss - reference_loss),
        ("hard_learner", learner_loss),
        ("easy_reference", -reference_loss),
    ):
        got = select_batch(
            torch.arange(N), learner_loss, reference_loss, batch_size=9, score=score, seed=5
        )
        assert torch.equal(got.indices, jestcore.independent_select(scores, 9, seed=5))
        assert torch.equal(got.batch, got.indices)
    # a model the score does not need may be omitted
    got = select_batch(torch.arange(N), learner_loss, batch_size=3, score="hard_learner", seed=0)
    assert got.indices.shape == (3,)


def test_select_batch_from_scores_and_the_independent_baseline():
    gen = torch.Generator().manual_seed(2)
    s = torch.randn(N, N, generator=gen, dtype=torch.float64)
    got = select_batch(nested_batch(), scores=s, batch_size=10, n_chunks=5, seed=3)
    assert torch.equal(got.indices, jestcore.joint_select(s, 10, n_chunks=5, seed=3))
    assert_batch_is(got.batch, got.indices)
    got = select_batch(torch.arange(N), scores=s, batch_size=10, method="independent", seed=3)
    assert torch.equal(got.indices, jestcore.independent_select(torch.diagonal(s), 10, seed=3))
    learner, reference = pair(gen), pair(gen)
    got = select_batch(
        torch.arange(N), learner, reference, batch_size=10, method="independent", greedy=True
    )
    literal = matching_loss(learner) - matching_loss(reference)
    assert got.indices.tolist() == np.argsort(-literal, kind="stable")[:10].tolist()


def test_filter_ratio_keeps_the_rounded_complement_and_a_short_batch_trains():
    x = torch.arange(50)
    scores = torch.zeros(50)
    for f, kept in ((0.8, 10), (0.5, 25), (0.0, 50), (0.98, 1), (0.7, 15), (0.75, 13)):
        assert select_batch(x, scores=scores, filter_ratio=f, seed=0).indices.shape == (kept,)
    # the short last super-batch of a data loader: round(5 * 0.1) = 1 (halves up), never 0
    assert select_batch(torch.arange(5), scores=torch.zeros(5), filter_ratio=0.9, seed=0).indices
    # n_chunks is capped at the number kept: 9 examples at f = 0.8 keep 2, in 2 chunks of one
    gen = torch.Generator().manual_seed(8)
    learner, reference = pair(gen, 9), pair(gen, 9)
    sel = JESTSelector(filter_ratio=0.8, n_chunks=16, seed=3)
    got = sel(torch.arange(9), learner, reference)
    seed = jestcore.fold_in(3, 0)
    expected = jestcore.joint_select_embeddings(learner, reference, 2, n_chunks=2, seed=seed)
    assert got.indices.tolist() == expected.tolist()


def test_numpy_integers_are_accepted_where_the_spec_accepts_them():
    gen = torch.Generator().manual_seed(9)
    learner, reference = pair(gen), pair(gen)
    kw = {"batch_size": np.int64(8), "n_chunks": np.int32(4), "seed": np.uint32(11)}
    got = select_batch(torch.arange(N), learner, reference, **kw)
    expected = jestcore.joint_select_embeddings(learner, reference, 8, n_chunks=4, seed=11)
    assert got.indices.tolist() == expected.tolist()
    sel = JESTSelector(batch_size=np.int64(8), n_chunks=np.int16(4), seed=np.int64(11))
    assert type(sel.seed) is int and sel.state_dict()["config"]["batch_size"] == 8
    assert type(sel.state_dict()["config"]["batch_size"]) is int
    assert sel(torch.arange(N), learner, reference).indices.shape == (8,)


def test_global_scope_without_distributed_is_the_local_selection():
    gen = torch.Generator().manual_seed(3)
    learner, reference = pair(gen), pair(gen)
    kw = {"batch_size": 8, "n_chunks": 2, "seed": 4}
    local = select_batch(nested_batch(), learner, reference, scope="local", **kw)
    glob = select_batch(nested_batch(), learner, reference, scope="global", **kw)
    assert torch.equal(local.indices, glob.indices)
    assert_batch_is(glob.batch, glob.indices)


def test_select_batch_refuses_bad_input_before_work():
    gen = torch.Generator().manual_seed(4)
    learner, reference = pair(gen), pair(gen)
    x = torch.arange(N)
    cases = [
        (dict(batch_size=4, filter_ratio=0.5), ValueError, "exactly one of batch_size"),
        (dict(), ValueError, "exactly one of batch_size"),
        (dict(batch_size=N + 1), ValueError, "batch_size must be between 1"),
        (dict(batch_size=2.0), TypeError, "batch_size must be an int"),
        (dict(batch_size=4, filter_ratio=None, score="hardest"), ValueError, "score must be"),
        (dict(batch_size=4, method="greedy"), ValueError, "method must be"),
        (dict(batch_size=4, scope="world"), ValueError, "scope must be"),
        (dict(batch_size=4, n_chunks=0), ValueError, "n_chunks"),
        (dict(batch_size=4, n_chunks=2), ValueError, "exactly one source of randomness"),
    ]
    for kwargs, error, match in cases:
        seedless = "randomness" in match
        with pytest.raises(error, match=match):
            select_batch(x, learner, reference, **kwargs, **({} if seedless else {"seed": 0}))
    with pytest.raises(ValueError, match="learner has outputs for 40 examples but the batch"):
        select_batch(torch.arange(N + 1), learner, reference, batch_size=4, seed=0)
    with pytest.raises(ValueError, match="needs the reference's outputs"):
        select_batch(x, learner, batch_size=4, seed=0)
    with pytest.raises(TypeError, match="learner must be a PairEmbeddings"):
        select_batch(x, [0.0] * N, reference, batch_size=4, seed=0)
    with pytest.raises(ValueError, match="learner must be 1-D"):
        select_batch(x, torch.zeros(N, 2), torch.zeros(N), batch_size=4, seed=0)
    with pytest.raises(TypeError, match="both be PairEmbeddings or both be losses"):
        select_batch(x, learner, torch.zeros(N), batch_size=4, seed=0)
    with pytest.raises(ValueError, match="either scores"):
        select_batch(x, learner, reference, scores=torch.zeros(N), batch_size=4, seed=0)
    with pytest.raises(ValueError, match="same first dimension"):
        select_batch(
            {"a": torch.zeros(N), "b": torch.zeros(N - 1)},
            scores=torch.zeros(N),
            batch_size=2,
            seed=0,
        )
    with pytest.raises(TypeError, match="no tensor inside"):
        select_batch({"a": None}, scores=torch.zeros(N), batch_size=2, seed=0)


def test_trees_take_and_concatenate():
    batch = nested_batch(10)
    assert batch_size_of(batch) == 10
    idx = torch.tensor([9, 0, 4])
    assert_batch_is(take_batch(batch, idx), idx)
    halves = [take_batch(batch, torch.arange(5)), take_batch(batch, torch.arange(5, 10))]
    assert_batch_is(concat_batches(halves), torch.arange(10))


def run_steps(selector, data, steps):
    out = []
    for t in range(steps):
        batch, learner, reference = data[t]
        out.append(selector(batch, learner, reference).indices.tolist())
    return out


def test_selector_seeds_warmup_and_exact_resume():
    gen = torch.Generator().manual_seed(5)
    data = [(torch.arange(N) + 100 * t, pair(gen), pair(gen)) for t in range(6)]
    config = dict(batch_size=8, n_chunks=4, seed=123, warmup_steps=2)
    full = run_steps(JESTSelector(**config), data, 6)
    # steps after warm-up: joint selection with seed fold_in(seed, step)
    for t in (2, 3, 4, 5):
        _, learner, reference = data[t]
        expected = jestcore.joint_select_embeddings(
            learner, reference, 8, n_chunks=4, seed=jestcore.fold_in(123, t)
        )
        assert full[t] == expected.tolist()
    # warm-up steps: uniform draws that ignore the scores (none are needed)
    warm = JESTSelector(**config)
    assert warm.in_warmup and not warm.needs_scores
    first = warm(data[0][0])
    assert first.indices.tolist() == full[0] and first.stats == {}
    assert (
        first.indices.tolist()
        == jestcore.independent_select(torch.zeros(N), 8, seed=jestcore.fold_in(123, 0)).tolist()
    )
    # resume from a state saved after 3 steps (through torch.save, as in a checkpoint)
    part = JESTSelector(**config)
    run_steps(part, data, 3)
    path_state = part.state_dict()
    resumed = JESTSelector(**config | {"seed": 999})  # the saved seed wins
    resumed.load_state_dict(path_state)
    assert resumed.step == 3 and resumed.needs_learner and resumed.needs_reference
    assert run_steps(resumed, data[3:], 3) == full[3:]
    assert resumed.last_stats["score_selected"].shape == ()


def test_selector_state_round_trips_through_torch_save(tmp_path):
    sel = JESTSelector(filter_ratio=0.75, n_chunks=2, seed=7, score="hard_learner")
    sel(torch.arange(8), torch.rand(8))
    torch.save(sel.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)  # plain data: no pickle code
    other = JESTSelector(filter_ratio=0.75, n_chunks=2, seed=7, score="hard_learner")
    other.load_state_dict(state)
    assert other.state_dict() == sel.state_dict() == {"step": 1, "seed": 7, "config": sel.config}
    assert not other.needs_reference
    mismatched = JESTSelector(filter_ratio=0.5, n_chunks=2, seed=7, score="hard_learner")
    with pytest.raises(ValueError, match=r"different config.*filter_ratio=0\.75, 0\.5"):
        mismatched.load_state_dict(state)
    with pytest.raises(ValueError, match="state must be a dict"):
        other.load_state_dict({"step": 1})
    with pytest.raises(ValueError, match="warmup_steps"):
        JESTSelector(batch_size=2, warmup_steps=-1)
    with pytest.raises(ValueError, match="exactly one of"):
        JESTSelector(seed=0)


class TinyEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.image = torch.nn.Linear(4, 3)
        self.text = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(5, 3))
        self.calls = []

    def forward(self, image, text):
        self.calls.append(image.shape[0])
        return jestcore.PairEmbeddings(self.image(image), self.text(text), 10.0, -2.0)


def test_score_forward_in_micro_batches_equals_one_pass():
    torch.manual_seed(0)
    model = TinyEncoder().train()
    batch = (torch.randn(23, 4), torch.randn(23, 5))
    whole = score_forward(model, batch)
    parts = score_forward(model, batch, score_batch_size=5)
    assert model.calls == [23, 5, 5, 5, 5, 3]
    assert model.training and model.text[0].training  # eval during the pass only
    assert isinstance(parts, jestcore.PairEmbeddings) and parts.scale == 10.0
    # same rows, other batch shapes: BLAS kernels may differ in the last bits (e.g. AVX-512)
    torch.testing.assert_close(parts.image, whole.image, rtol=RTOL, atol=RTOL)
    torch.testing.assert_close(parts.text, whole.text, rtol=RTOL, atol=RTOL)
    assert not parts.image.requires_grad  # no autograd graph was built
    # eval mode: dropout off, so the outputs are the deterministic function of the inputs
    expected = model.text[1](batch[1])
    torch.testing.assert_close(parts.text, expected.detach(), rtol=RTOL, atol=RTOL)

    def flexi(m, b):  # a cheaper scoring forward: half the image features
        return m(b[0] * torch.tensor([1.0, 1.0, 0.0, 0.0]), b[1])

    cheap = score_forward(model, batch, forward=flexi, score_batch_size=10)
    assert not torch.allclose(cheap.image, whole.image, rtol=0.1, atol=0.1)
    torch.testing.assert_close(cheap.text, whole.text, rtol=RTOL, atol=RTOL)
    with pytest.raises(ValueError, match="score_batch_size"):
        score_forward(model, batch, score_batch_size=0)
    # NumPy integers are ints
    numpy_sized = score_forward(model, batch, score_batch_size=np.int64(5))
    torch.testing.assert_close(numpy_sized.image, parts.image, rtol=0, atol=0)


def test_select_batch_on_the_meta_device():
    # Shapes only: selection must not read values (no host sync) nor create CPU tensors.
    learner = jestcore.PairEmbeddings(
        torch.empty(N, D, device="meta"), torch.empty(N, D, device="meta"), 10.0, -5.0
    )
    batch = {"x": torch.empty(N, 3, device="meta")}
    got = select_batch(batch, learner, learner, batch_size=8, n_chunks=2, seed=0)
    assert got.indices.device.type == "meta" and got.indices.shape == (8,)
    assert got.batch["x"].device.type == "meta" and got.batch["x"].shape == (8, 3)


def _overhead_bench():
    """``bench/torch_overhead.py`` as a module (its sync counter and measurement)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "torch_overhead.py"
    spec = importlib.util.spec_from_file_location("torch_overhead", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tensors", [False, True], ids=["float scale", "tensor scale"])
def test_a_selector_step_reads_on_the_host_only_what_the_spec_reads(tensors):
    # Validated once: the adapter adds no host synchronisation to the spec's own checks, and
    # the spec reads one value (a bound that is finite only if every input value is).
    row = _overhead_bench().measure(16, 0.8, 8, tensors, repeats=1)
    assert row["agree"] and row["spec_syncs"] == 1
    assert row["syncs"] == row["spec_syncs"], row
