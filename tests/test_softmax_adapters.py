"""``loss="softmax"`` through the adapters and selectors: they pass it to the spec, never select.

The spec's softmax selection against a literal Algorithm 3 is ``test_softmax.py``; here each
adapter equals the spec on the same inputs, selectors record the loss and resume identically,
and a bad loss is refused naming it. The sharded JAX selection is in ``test_jax_sharding.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import RTOL, float32_models
from test_softmax import assert_matches_algorithm_3

import jestcore

SCORES = ("learnability", "hard_learner", "easy_reference")

BAD_LOSSES = [
    (1, TypeError, "loss must be a str"),
    ("clip", ValueError, r"loss must be one of \['sigmoid', 'softmax'\], got 'clip'"),
]


def _torch_models(n: int, seed: int) -> tuple[jestcore.PairEmbeddings, jestcore.PairEmbeddings]:
    learner, reference = float32_models(seed, n, 8, reference=(7.0, -3.0))
    return tuple(  # type: ignore[return-value]
        jestcore.PairEmbeddings(
            torch.from_numpy(m.image), torch.from_numpy(m.text), float(m.scale), float(m.bias)
        )
        for m in (learner, reference)
    )


def _needed(learner, reference, score):
    return (
        learner if score != "easy_reference" else None,
        reference if score != "hard_learner" else None,
    )


# ----------------------------------------------------------------------------- PyTorch


@pytest.mark.parametrize("score", SCORES)
def test_torch_select_batch_equals_the_spec(score):
    from jestcore.adapters.torch import select_batch

    learner, reference = _needed(*_torch_models(40, 1), score)
    batch = {"x": torch.arange(40.0)[:, None], "id": torch.arange(40)}
    got = select_batch(
        batch, learner, reference, batch_size=9, n_chunks=4, score=score, loss="softmax", seed=3
    )
    expected = jestcore.joint_select_embeddings(
        learner, reference, 9, n_chunks=4, score=score, loss="softmax", seed=3
    )
    assert got.indices.tolist() == expected.tolist()
    assert got.batch["id"].tolist() == expected.tolist()
    sigmoid = select_batch(batch, learner, reference, batch_size=9, n_chunks=4, score=score, seed=3)
    assert sigmoid.indices.tolist() != got.indices.tolist()  # the loss reaches the spec


def test_torch_independent_softmax_uses_the_first_chunks_logits():
    from jestcore.adapters.torch import select_batch

    learner, reference = _torch_models(30, 2)
    got = select_batch(
        torch.arange(30), learner, reference, batch_size=6, method="independent",
        loss="softmax", seed=5,
    )  # fmt: skip

    def u(m):  # the unconditional softmax loss -scale * <image_i, text_i>, by hand
        return -float(m.scale) * (m.image.double() * m.text.double()).sum(dim=1)

    per_example = u(learner) - u(reference)
    expected = jestcore.independent_select(per_example.float(), 6, seed=5)
    assert got.indices.tolist() == expected.tolist()
    torch.testing.assert_close(
        got.stats["score_all"], per_example.mean().float(), rtol=1e-5, atol=1e-5
    )
    # one chunk of joint selection draws from the same logits, greedily the same picks
    greedy = select_batch(
        torch.arange(30), learner, reference, batch_size=6, method="independent",
        loss="softmax", greedy=True,
    )  # fmt: skip
    assert sorted(greedy.indices.tolist()) == sorted(torch.topk(per_example, 6).indices.tolist())


def test_torch_selector_passes_records_and_resumes_the_loss():
    from jestcore.adapters.torch import JESTSelector

    learner, reference = _torch_models(40, 3)
    batch = torch.arange(40)
    selector = JESTSelector(batch_size=8, n_chunks=4, seed=3, loss="softmax")
    assert selector.config["loss"] == "softmax"
    assert "loss='softmax'" in repr(selector)
    picks = []
    for t in range(4):
        expected = jestcore.joint_select_embeddings(
            learner, reference, 8, n_chunks=4, seed=jestcore.fold_in(3, t), loss="softmax"
        )
        picks.append(selector(batch, learner, reference).indices.tolist())
        assert picks[-1] == expected.tolist()
        if t == 1:
            state = selector.state_dict()
    assert state["config"]["loss"] == "softmax"
    resumed = JESTSelector(batch_size=8, n_chunks=4, seed=3, loss="softmax")
    resumed.load_state_dict(state)
    assert [resumed(batch, learner, reference).indices.tolist() for _ in range(2)] == picks[2:]
    with pytest.raises(ValueError, match=r"loss='softmax', 'sigmoid'"):
        JESTSelector(batch_size=8, n_chunks=4, seed=3).load_state_dict(state)
    # a state saved before selectors recorded the loss selected under the sigmoid loss
    old = JESTSelector(batch_size=8, n_chunks=4, seed=3).state_dict()
    del old["config"]["loss"]
    JESTSelector(batch_size=8, n_chunks=4, seed=3).load_state_dict(old)
    with pytest.raises(ValueError, match=r"loss='sigmoid', 'softmax'"):
        JESTSelector(batch_size=8, n_chunks=4, seed=3, loss="softmax").load_state_dict(old)


@pytest.mark.parametrize(("loss", "error", "match"), BAD_LOSSES)
def test_torch_bad_loss_is_refused_naming_it(loss, error, match):
    from jestcore.adapters.torch import JESTSelector, select_batch

    learner, reference = _torch_models(10, 0)
    with pytest.raises(error, match=match):
        select_batch(torch.arange(10), learner, reference, batch_size=2, loss=loss, seed=0)
    with pytest.raises(error, match=match):  # checked whatever the outputs are
        select_batch(torch.arange(10), torch.zeros(10), batch_size=2, loss=loss, seed=0)
    with pytest.raises(error, match=match):
        JESTSelector(batch_size=2, loss=loss)


# ----------------------------------------------------------------------------- JAX


@pytest.mark.parametrize("score", SCORES)
def test_jax_adapter_and_selector_equal_the_spec(score):
    import jax
    import jax.numpy as jnp
    from jestcore.adapters import jax as jj

    learner, reference = _needed(*float32_models(4, 48, 8, reference=(7.0, -3.0)), score)

    def on_jax(m):
        return (
            None if m is None else m._replace(image=jnp.asarray(m.image), text=jnp.asarray(m.text))
        )

    def check(got, seed):
        noise = jestcore.gumbel_noise(seed, (4, 48), xp=np)
        assert_matches_algorithm_3(
            np.asarray(got), learner, reference, score, 12, 4, noise, RTOL["float32"]
        )

    got = jj.joint_select_embeddings(
        on_jax(learner), on_jax(reference), 12, n_chunks=4, score=score, loss="softmax", seed=3
    )
    check(got, 3)
    selector = jj.JESTSelector(batch_size=12, n_chunks=4, score=score, loss="softmax")
    state = selector.init(3)
    step = jax.jit(selector.select)
    picks = []
    for t in range(3):
        idx, state = step(state, on_jax(learner), on_jax(reference))
        check(idx, jestcore.fold_in(3, t))
        picks.append(np.asarray(idx).tolist())
    # resumed from the checkpointed state (two 0-d arrays) it selects the same
    restored = jj.SelectionState(*(jnp.asarray(np.asarray(x)) for x in (state.seed, 1)))
    again = [
        np.asarray(
            step(restored._replace(step=jnp.int32(t)), on_jax(learner), on_jax(reference))[0]
        )
        for t in (1, 2)
    ]
    assert [a.tolist() for a in again] == picks[1:]


def test_jax_softmax_compiles_once_per_loss():
    import jax.numpy as jnp
    from jestcore.adapters import jax as jj
    from jestcore.adapters.jax import selection as jsel

    learner, reference = (
        m._replace(image=jnp.asarray(m.image), text=jnp.asarray(m.text))
        for m in float32_models(5, 24, 4)
    )
    jj.joint_select_embeddings(learner, reference, 6, n_chunks=2, loss="softmax", seed=0)
    before = jsel._select_embeddings._cache_size()
    for seed in (1, 2):
        jj.joint_select_embeddings(learner, reference, 6, n_chunks=2, loss="softmax", seed=seed)
    assert jsel._select_embeddings._cache_size() == before


@pytest.mark.parametrize(("loss", "error", "match"), BAD_LOSSES)
def test_jax_bad_loss_is_refused_naming_it(loss, error, match):
    from jestcore.adapters import jax as jj

    learner, reference = float32_models(0, 8, 4)
    with pytest.raises(error, match=match):
        jj.joint_select_embeddings(learner, reference, 2, n_chunks=1, loss=loss, seed=0)
    with pytest.raises(error, match=match):
        jj.JESTSelector(batch_size=2, loss=loss)
