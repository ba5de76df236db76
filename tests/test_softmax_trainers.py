"""The reference trainers' CLIP option (``loss="softmax"``) and ``jestcore demo --loss softmax``.

The loss against a hand-written symmetric cross-entropy in both frameworks, training lowers it,
selection scores under the same loss, and the demo records it. That the PyTorch and JAX trainers
take the same steps under the softmax loss is ``test_jax_trainer.py``'s trajectory test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jestcore.adapters import demo
from jestcore.adapters.jax import trainer as jt
from jestcore.adapters.torch import trainer as tt
from test_jax_trainer import TINY_MODEL, tiny_config, tiny_data

import jestcore


def literal_clip_loss(image: np.ndarray, text: np.ndarray, scale: float) -> float:
    """Symmetric InfoNCE by hand: mean over pairs of both directions' -log softmax, halved."""
    n = image.shape[0]
    total = 0.0
    for i in range(n):
        row = [scale * float(image[i] @ text[j]) for j in range(n)]  # image i against texts
        column = [scale * float(image[j] @ text[i]) for j in range(n)]  # text i against images
        total += -(row[i] - math.log(sum(math.exp(x) for x in row)))
        total += -(column[i] - math.log(sum(math.exp(x) for x in column)))
    return total / (2 * n)


def test_clip_loss_equals_a_hand_written_symmetric_cross_entropy_in_both_frameworks():
    rng = np.random.default_rng(3)
    image = rng.standard_normal((7, 5))
    text = image + 0.5 * rng.standard_normal((7, 5))
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    log_scale = math.log(12.0)
    want = literal_clip_loss(image, text, 12.0)
    out = jestcore.PairEmbeddings(
        torch.from_numpy(image), torch.from_numpy(text), torch.tensor(12.0, dtype=torch.float64),
        torch.tensor(-5.0, dtype=torch.float64),  # ignored: a bias cancels in a softmax
    )  # fmt: skip
    assert float(tt.clip_loss(out)) == pytest.approx(want, rel=1e-12)
    got_jax = float(jt.clip_loss(jnp.asarray(image, jnp.float32), jnp.asarray(text, jnp.float32),
                                 jnp.float32(log_scale)))  # fmt: skip
    assert got_jax == pytest.approx(want, rel=2e-6)  # float32
    # the two frameworks agree on float32 inputs
    f32 = jestcore.PairEmbeddings(
        torch.from_numpy(image.astype(np.float32)), torch.from_numpy(text.astype(np.float32)),
        torch.tensor(log_scale, dtype=torch.float32).exp(), 0.0,
    )  # fmt: skip
    assert float(tt.clip_loss(f32)) == pytest.approx(got_jax, rel=1e-6)


def test_the_clip_dual_encoder_has_a_learnable_temperature_and_no_bias():
    model = tt.DualEncoder(tt.ImageMLP(16, 8, 4), tt.BagOfWords(8, 4), loss="softmax", generator=0)
    names = {name for name, _ in model.named_parameters()}
    assert "log_scale" in names and "bias" not in names
    out = model(torch.rand(3, 16), torch.ones(3, 2, dtype=torch.long))
    assert float(out.bias) == 0.0 and out.scale.requires_grad
    sigmoid = tt.DualEncoder(tt.ImageMLP(16, 8, 4), tt.BagOfWords(8, 4), generator=0)
    assert "bias" in {name for name, _ in sigmoid.named_parameters()}


def _torch_loss_on(model, images, tokens) -> float:
    with torch.no_grad():
        return float(tt.clip_loss(model(torch.from_numpy(images), torch.from_numpy(tokens))))


@pytest.mark.parametrize("method", ["uniform", "jest"])
def test_torch_training_lowers_the_clip_loss_and_selects_under_it(method, monkeypatch):
    images, tokens, labels, captions = tiny_data()
    clean = labels == captions
    reference_model = tt.DualEncoder(
        tt.ImageMLP(16, 32, 8), tt.BagOfWords(8, 8), loss="softmax", generator=1
    )
    tt.train(
        reference_model, images[clean], tokens[clean], steps=60, batch_size=16,
        method="uniform", loss="softmax", learning_rate=1e-2, seed=0,
    )  # fmt: skip
    reference = tt.embed_arrays(reference_model, images, tokens)
    assert float(reference.bias) == 0.0
    seen: list[str] = []
    real = tt.select_batch

    def spy(*args, **kwargs):
        seen.append(kwargs["loss"])
        return real(*args, **kwargs)

    monkeypatch.setattr(tt, "select_batch", spy)
    model = tt.DualEncoder(tt.ImageMLP(16, 32, 8), tt.BagOfWords(8, 8), loss="softmax", generator=2)
    held_out = slice(0, 64)
    before = _torch_loss_on(model, images[held_out], tokens[held_out])
    tt.train(
        model, images, tokens, steps=40, batch_size=16, method=method, reference=reference,
        filter_ratio=0.75, n_chunks=4, loss="softmax", learning_rate=1e-2, seed=3,
    )  # fmt: skip
    after = _torch_loss_on(model, images[held_out], tokens[held_out])
    assert after < 0.8 * before, (before, after)
    assert seen == ([] if method == "uniform" else ["softmax"] * 40)


def test_jax_training_lowers_the_clip_loss_and_selects_under_it():
    images, tokens, labels, captions = tiny_data()
    clean = labels == captions
    ref = jt.SigLIPTrainer(TINY_MODEL, tiny_config("uniform", steps=60, loss="softmax"))
    ref_state, ref_losses = ref.fit(ref.init(7), images[clean], tokens[clean])
    assert "bias" not in ref_state.params
    reference = ref.embed(ref_state.params, images, tokens)
    assert float(reference.bias) == 0.0
    trainer = jt.SigLIPTrainer(TINY_MODEL, tiny_config("jest", loss="softmax"))
    state = trainer.init(0)
    _, losses = trainer.fit(state, images, tokens, reference=reference)
    losses = np.asarray(losses)
    assert losses[-5:].mean() < 0.8 * losses[:5].mean(), losses
    assert np.asarray(ref_losses)[-5:].mean() < 0.8 * np.asarray(ref_losses)[:5].mean()
    # the step's selection is the softmax selection of the learner's and reference's embeddings
    data = trainer.prepare(images, tokens)
    rows = jnp.arange(trainer.config.super_batch)
    positions, _ = trainer.select(state, data, reference, rows)
    learner = trainer.embeddings(state.params, data["images"][rows], data["tokens"][rows])
    ref_rows = jestcore.PairEmbeddings(
        reference.image[rows], reference.text[rows], reference.scale, reference.bias
    )
    from jestcore.adapters import jax as jj

    expected = jj.joint_select_embeddings(
        learner, ref_rows, 16, n_chunks=4, loss="softmax", seed=jestcore.fold_in(0, 0)
    )
    np.testing.assert_array_equal(np.asarray(positions), np.asarray(expected))


@pytest.mark.parametrize(("loss", "error"), [("clip", ValueError), (None, TypeError)])
def test_bad_loss_is_refused_naming_it(loss, error):
    images, tokens, *_ = tiny_data(64)
    match = "loss must be"
    with pytest.raises(error, match=match):
        jt.TrainConfig(steps=1, loss=loss)
    with pytest.raises(error, match=match):
        tt.DualEncoder(tt.ImageMLP(16, 8, 4), tt.BagOfWords(8, 4), loss=loss)
    model = tt.DualEncoder(tt.ImageMLP(16, 8, 4), tt.BagOfWords(8, 4))
    with pytest.raises(error, match=match):
        tt.train(model, images, tokens, steps=1, batch_size=8, method="uniform", loss=loss)
    with pytest.raises(error, match=match):
        demo.DemoConfig(loss=loss)


# ----------------------------------------------------------------------------- the demo


def test_demo_selects_under_the_configs_loss():
    pool = jestcore.PairEmbeddings(*np.random.default_rng(0).standard_normal((2, 20, 4)), 5.0, 0.0)
    reference = pool._replace(image=pool.image[::-1].copy(), scale=3.0)
    config = demo.DemoConfig.quick(batch_size=4, n_chunks=2, loss="softmax")
    got = demo.select_sub_batch("jest", pool, reference, config, seed=7)
    expected = jestcore.joint_select_embeddings(pool, reference, 4, n_chunks=2, seed=7,
                                                loss="softmax")  # fmt: skip
    np.testing.assert_array_equal(got, expected)
    # both backends build their trainers with it
    from jestcore.adapters.demo import jax_backend, torch_backend

    assert jax_backend.train_config(config, "jest").loss == "softmax"
    assert torch_backend.demo_model(config, 0).loss == "softmax"
    recipe = demo.recipe_record(config)
    assert recipe["loss"].startswith("softmax (CLIP)")
    assert demo.recipe_record(demo.DemoConfig.quick())["loss"].startswith("sigmoid (SigLIP)")


def test_a_tiny_demo_run_with_loss_softmax(tmp_path: Path, capsys, monkeypatch):
    from jestcore.adapters.demo import cli

    real_quick = demo.DemoConfig.quick  # made tinier: a short reference, a narrow MLP
    tiny = {"reference_steps": 20, "image_hidden": 32}
    monkeypatch.setattr(
        demo.DemoConfig, "quick", classmethod(lambda cls, **kw: real_quick(**{**tiny, **kw}))
    )
    args = ["demo", "--quick", "--steps", "20", "--seeds", "1", "--eval-every", "10",
            "--loss", "softmax", "--workers", "1", "--no-progress",
            "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(args) == 0
    assert "softmax loss" in capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["loss"] == "softmax"
    assert results["config"]["recipe"]["loss"].startswith("softmax (CLIP)")
    assert set(results["methods"]) == {"uniform", "jest"}
    assert all(0.0 <= a <= 1.0 for a in results["methods"]["jest"]["final_accuracy"])


def test_the_cli_refuses_an_unknown_loss(capsys):
    from jestcore.adapters.demo import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--loss", "clip"])
    assert exit_.value.code == 2
    assert "--loss: invalid choice: 'clip'" in capsys.readouterr().err
