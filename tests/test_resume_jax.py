"""Resuming JAX training: a run interrupted at a random step selects as an uninterrupted one.

A small SigLIP learner (:class:`jestcore.adapters.jax.trainer.SigLIPTrainer`, JEST learnability
against cached reference embeddings) trains with a jitted step. Selection depends on the
learner's parameters (its embeddings are scored) and on the selection state (the step's seed), so
a resumed run selects the same rows only if the parameters, the Adam state and the selection
state all come back exactly. The checkpoint is the state pytree's leaves in one ``.npz`` file
(loaded with ``allow_pickle=False``: nothing is unpickled), and the resumed run rebuilds the state
from that file alone, with a new trainer object.

The interruption step is drawn with a fixed seed. Negative controls show that the test can fail:
resuming without the parameters, or with the step counter reset, selects differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jestcore.adapters.jax.trainer import SigLIPTrainer, TrainConfig, TrainState, mlp_dual_encoder

STEPS = 12
SEED = 7
#: The steps to interrupt at: drawn once, with a fixed seed.
INTERRUPTS = sorted(
    int(t) for t in np.random.default_rng(2024).choice(np.arange(1, STEPS), 2, replace=False)
)


def make_trainer(method: str = "jest") -> SigLIPTrainer:
    model = mlp_dual_encoder(pixels=16, hidden=32, embed_dim=8, vocab_size=5)
    config = TrainConfig(
        steps=STEPS, method=method, batch_size=8, filter_ratio=0.75, n_chunks=4, learning_rate=3e-2
    )
    return SigLIPTrainer(model, config)


@pytest.fixture(scope="module")
def setup():
    """Training arrays, the reference's cached embeddings, and the rows of every step."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=160)
    images = np.eye(4, 16, dtype=np.float32)[labels] + 0.3 * rng.random((160, 16), "f4")
    tokens = (labels[:, None] + 1).astype(np.int32)
    reference = make_trainer("uniform")
    ref_state = reference.init(1)
    ref_state, _ = reference.fit(ref_state, images[:64], tokens[:64])
    ref_emb = reference.embed(ref_state.params, images, tokens)
    trainer = make_trainer()
    data = trainer.prepare(images, tokens)
    n = trainer.config.super_batch
    rows = [np.random.default_rng([SEED, 1, t]).choice(160, n, replace=False) for t in range(STEPS)]
    return data, ref_emb, [jnp.asarray(r, jnp.int32) for r in rows]


def train(trainer, state, setup, steps) -> tuple[TrainState, list[np.ndarray], list[float]]:
    """Runs ``steps`` with a jitted step; returns the state, each step's trained rows and loss."""
    data, reference, rows = setup
    step = jax.jit(trainer.step)
    picks, losses = [], []
    for t in steps:
        state, info = step(state, data, reference, rows[t])
        picks.append(np.asarray(info.rows))
        losses.append(float(info.loss))
    return state, picks, losses


def save(state: TrainState, path: Path) -> None:
    """The state pytree's leaves, in order, as arrays of one ``.npz`` (no pickle)."""
    leaves = jax.tree.leaves(state)
    np.savez(path, *[np.asarray(x) for x in leaves])


def load(path: Path, template: TrainState) -> TrainState:
    """A state with ``template``'s structure and the saved leaves (dtypes and shapes checked)."""
    leaves, treedef = jax.tree.flatten(template)
    with np.load(path, allow_pickle=False) as f:
        saved = [f[f"arr_{i}"] for i in range(len(f.files))]
    assert len(saved) == len(leaves)
    for a, b in zip(saved, leaves, strict=True):
        assert a.dtype == np.asarray(b).dtype and a.shape == np.shape(b), (a.dtype, b)
    return jax.tree.unflatten(treedef, [jnp.asarray(x) for x in saved])


@pytest.fixture(scope="module")
def uninterrupted(setup):
    trainer = make_trainer()
    return train(trainer, trainer.init(SEED), setup, range(STEPS))


@pytest.mark.parametrize("interrupt", INTERRUPTS)
def test_a_resumed_run_selects_exactly_what_an_uninterrupted_run_selects(
    setup, uninterrupted, interrupt, tmp_path
):
    final, expected_picks, expected_losses = uninterrupted
    trainer = make_trainer()
    state, first, first_losses = train(trainer, trainer.init(SEED), setup, range(interrupt))
    save(state, tmp_path / "ckpt.npz")
    del state, trainer  # the resumed run knows only the file

    trainer = make_trainer()
    restored = load(tmp_path / "ckpt.npz", trainer.init(0, param_seed=99))
    assert int(restored.selection.step) == interrupt
    state, second, second_losses = train(trainer, restored, setup, range(interrupt, STEPS))

    for t, (a, b) in enumerate(zip(expected_picks, first + second, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"step {t} selected differently")
    assert first_losses + second_losses == expected_losses
    for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resuming_without_the_parameters_or_the_step_selects_differently(
    setup, uninterrupted, tmp_path
):
    # Negative controls: the comparison above would notice a checkpoint that lost either.
    _, expected_picks, _ = uninterrupted
    interrupt = INTERRUPTS[0]
    trainer = make_trainer()
    state, _, _ = train(trainer, trainer.init(SEED), setup, range(interrupt))
    fresh = trainer.init(SEED)

    def picks_after(resumed: TrainState) -> list[np.ndarray]:
        return train(trainer, resumed, setup, range(interrupt, STEPS))[1]

    later = expected_picks[interrupt:]
    no_params = state._replace(params=fresh.params, opt_state=fresh.opt_state)
    no_step = state._replace(selection=fresh.selection)
    for broken in (no_params, no_step):
        got = picks_after(broken)
        assert any(not np.array_equal(a, b) for a, b in zip(later, got, strict=True))
    # and the selection really varies from step to step
    assert len({tuple(p.tolist()) for p in expected_picks}) == STEPS


def test_fit_resumed_from_its_own_checkpoint_matches_an_uninterrupted_fit(setup, tmp_path):
    # The same with SigLIPTrainer.fit's compiled loop: checkpoint in on_eval, resume with start=.
    data, reference, _ = setup
    images, tokens = np.asarray(data["images"]), np.asarray(data["tokens"])
    interrupt = INTERRUPTS[-1]
    saved: dict[int, Any] = {}

    def checkpoint(step: int, state: TrainState) -> None:
        if step == interrupt:
            save(state, tmp_path / "fit.npz")
            saved[step] = True

    trainer = make_trainer()
    options = {"reference": reference, "eval_every": interrupt}
    final, losses = trainer.fit(trainer.init(SEED), images, tokens, **options, on_eval=checkpoint)
    assert saved == {interrupt: True}

    trainer = make_trainer()
    restored = load(tmp_path / "fit.npz", trainer.init(0))
    state, rest = trainer.fit(restored, images, tokens, **options, start=interrupt)
    np.testing.assert_array_equal(rest, losses[interrupt:])
    for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
