"""The JAX SigLIP trainer: loss, schedule, models, selection inside the step, compilation, and
the demo's JAX backend (:mod:`jestcore.adapters.demo.jax_backend`).

Inputs are built in NumPy. The maths is checked against literal oracles (a double loop for the
loss, :func:`jestcore.adapters.recipe.learning_rate` for the schedule, nearest-neighbour
upsampling for Flexi scoring, :func:`jestcore.adapters.demo.select_sub_batch` on NumPy for the
selection), and against the PyTorch trainer started from the same weights.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jestcore.adapters import demo, recipe
from jestcore.adapters.demo import jax_backend as jb
from jestcore.adapters.demo.digits import DigitsConfig
from jestcore.adapters.jax import trainer as jt
from jestcore.adapters.recipe import downsample

import jestcore

# ----------------------------------------------------------------------------------------------
# A tiny problem: 4 classes of 4x4 images, one-word captions (token = class + 1) plus a filler
# word; a third of the pairs carry the caption of another class.

N_CLASSES, PIXELS, VOCAB = 4, 16, 8


def tiny_data(n: int = 384, seed: int = 0, wrong: float = 0.3) -> tuple[np.ndarray, ...]:
    prototypes = np.random.default_rng(100).random((N_CLASSES, PIXELS)).astype(np.float32)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, size=n)
    images = prototypes[labels] + 0.15 * rng.standard_normal((n, PIXELS)).astype(np.float32)
    captions = labels.copy()
    flip = rng.random(n) < wrong
    captions[flip] = (labels[flip] + rng.integers(1, N_CLASSES, size=int(flip.sum()))) % N_CLASSES
    tokens = np.zeros((n, 3), dtype=np.int32)
    tokens[:, 0] = captions + 1
    tokens[:, 1] = rng.integers(N_CLASSES + 1, VOCAB, size=n)
    return images.astype(np.float32), tokens, labels, captions


def tiny_config(method: str, **overrides: object) -> jt.TrainConfig:
    base: dict[str, object] = dict(
        steps=40, method=method, batch_size=16, filter_ratio=0.75, n_chunks=4, learning_rate=1e-2
    )
    base.update(overrides)
    return jt.TrainConfig(**base)  # type: ignore[arg-type]


TINY_MODEL = jt.mlp_dual_encoder(pixels=PIXELS, hidden=32, embed_dim=8, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def tiny() -> dict[str, object]:
    images, tokens, labels, captions = tiny_data()
    ref_trainer = jt.SigLIPTrainer(TINY_MODEL, tiny_config("uniform", steps=60))
    clean = labels == captions
    state, _ = ref_trainer.fit(ref_trainer.init(7), images[clean], tokens[clean])
    reference = ref_trainer.embed(state.params, images, tokens)
    return {"images": images, "tokens": tokens, "labels": labels, "reference": reference}


# ----------------------------------------------------------------------------------------------
# Loss and schedule against literal oracles.


def test_siglip_loss_matches_literal_double_loop() -> None:
    rng = np.random.default_rng(1)
    image = rng.standard_normal((5, 3))
    text = rng.standard_normal((5, 3))
    t, bias = 0.7, -1.3
    expected = 0.0
    for i in range(5):
        for j in range(5):
            z = 1.0 if i == j else -1.0
            logit = math.exp(t) * float(image[i] @ text[j]) + bias
            expected += -math.log(1.0 / (1.0 + math.exp(-z * logit)))
    expected /= 5
    got = jt.siglip_loss(jnp.asarray(image, jnp.float32), jnp.asarray(text, jnp.float32), t, bias)
    np.testing.assert_allclose(float(got), expected, rtol=4 * np.sqrt(np.finfo(np.float32).eps))
    # The spec's loss matrix sums to the same batch loss.
    matrix = jestcore.sigmoid_loss_matrix(image, text, scale=math.exp(t), bias=bias)
    np.testing.assert_allclose(float(np.sum(matrix)) / 5, expected, rtol=1e-12)


@pytest.mark.parametrize(("total", "fraction"), [(1, 0.05), (10, 0.1), (37, 0.05), (300, 0.2)])
def test_schedule_equals_the_recipe_learning_rate(total: int, fraction: float) -> None:
    warm = recipe.warmup_steps(total, fraction)
    schedule = jt.learning_rate_schedule(3e-3, total, warm)
    got = np.asarray(jax.vmap(schedule)(jnp.arange(total)))
    expected = [
        recipe.learning_rate(t, total, peak=3e-3, warmup_fraction=fraction) for t in range(total)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-10)


def test_optimizer_steps_follow_the_schedule() -> None:
    """Adam (bias-corrected) under a constant gradient g steps by -lr_t * sign(g) (up to eps)."""
    trainer = jt.SigLIPTrainer(TINY_MODEL, tiny_config("uniform", steps=20, warmup_fraction=0.2))
    params = {"x": jnp.ones(3)}
    opt = trainer.optimizer
    state = opt.init(params)
    grads = {"x": jnp.asarray([1.0, -2.0, 0.5])}
    for t in range(3):  # constant gradients: bias-corrected Adam steps by -lr * sign(g)
        updates, state = opt.update(grads, state, params)
        lr = recipe.learning_rate(t, 20, peak=1e-2, warmup_fraction=0.2)
        np.testing.assert_allclose(np.asarray(updates["x"]), -lr * np.sign([1, -2, 0.5]), rtol=1e-5)


@pytest.mark.parametrize(
    ("method", "filter_ratio", "adam_beta2", "want"),
    [
        ("uniform", 0.75, None, 0.999),
        ("jest", 0.75, None, 0.95),
        ("flexi_jest", 0.75, None, 0.95),
        ("easy_reference", 0.75, None, 0.95),
        ("independent", 0.75, None, 0.95),
        ("jest", 0.0, None, 0.999),  # f = 0 filters nothing
        ("uniform", 0.75, 0.9, 0.9),
    ],
)
def test_optimizer_betas_per_method(method, filter_ratio, adam_beta2, want) -> None:
    """Adam's beta2 is 0.95 when the method filters, 0.999 otherwise (or as configured)."""
    config = tiny_config(method, filter_ratio=filter_ratio, adam_beta2=adam_beta2)
    assert config.beta2 == want
    opt = jt.SigLIPTrainer(TINY_MODEL, config).optimizer
    params = {"x": jnp.zeros(3)}
    schedule = jt.learning_rate_schedule(config.learning_rate, config.steps, config.warmup_steps)
    oracle = optax.adam(schedule, b1=0.9, b2=want, eps=1e-8)
    state, expected_state = opt.init(params), oracle.init(params)
    rng = np.random.default_rng(0)
    for _ in range(4):  # varying gradients: the second moment's decay shows in the updates
        grads = {"x": jnp.asarray(rng.normal(size=3), jnp.float32)}
        updates, state = opt.update(grads, state, params)
        expected, expected_state = oracle.update(grads, expected_state, params)
        np.testing.assert_array_equal(np.asarray(updates["x"]), np.asarray(expected["x"]))
    with pytest.raises(ValueError, match="adam_beta2"):
        tiny_config(method, adam_beta2=1.0)


def test_flexi_step_co_trains_half_at_low_resolution(tiny: dict) -> None:
    """Algorithm 2: the loss is the mean of the selected [::2] at full resolution and [1::2]
    pooled, and the step's gradient is that loss's gradient."""
    config = tiny_config("flexi_jest")
    trainer = jt.SigLIPTrainer(TINY_MODEL, config)
    state = trainer.init(11, param_seed=5)
    data = trainer.prepare(tiny["images"], tiny["tokens"])
    rows = np.random.default_rng(1).choice(len(tiny["images"]), config.super_batch, replace=False)
    new_state, info = jax.jit(trainer.step)(
        state, data, tiny["reference"], jnp.asarray(rows, jnp.int32)
    )
    trained = np.asarray(info.rows)
    full, low = recipe.flexi_split(config.batch_size)
    pooled = downsample(tiny["images"], 2)
    images, tokens = tiny["images"], tiny["tokens"]

    def manual(params: dict) -> jax.Array:
        high = trainer.loss(params, images[trained[full]], tokens[trained[full]])
        small = trainer.loss(params, pooled[trained[low]], tokens[trained[low]], factor=2)
        return 0.5 * (high + small)

    np.testing.assert_allclose(float(info.loss), float(manual(state.params)), rtol=1e-5)
    full_res = float(trainer.loss(state.params, images[trained], tokens[trained]))
    assert abs(float(info.loss) - full_res) > 1e-3  # not the old all-full-resolution loss
    # The low-resolution half alone moves the parameters (its path is co-trained).
    low_grads = jax.grad(
        lambda p: trainer.loss(p, pooled[trained[low]], tokens[trained[low]], factor=2)
    )(state.params)
    assert float(jnp.abs(low_grads["encoder"]["image"]["l1"]["w"]).sum()) > 0
    updates, _ = trainer.optimizer.update(jax.grad(manual)(state.params), state.opt_state)
    expected = optax.apply_updates(state.params, updates)
    for got, want in zip(
        jax.tree_util.tree_leaves(new_state.params),
        jax.tree_util.tree_leaves(expected),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        tiny_config("flexi_jest", batch_size=1, n_chunks=1)


# ----------------------------------------------------------------------------------------------
# The model.


def test_pooled_image_is_the_full_layer_on_the_upsampled_image() -> None:
    model = jt.mlp_dual_encoder(pixels=64, hidden=16, embed_dim=4, vocab_size=5)
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(2)
    images = rng.random((6, 64)).astype(np.float32)
    pooled = downsample(images, 2)  # (6, 16)
    upsampled = np.repeat(np.repeat(pooled.reshape(6, 4, 4), 2, axis=1), 2, axis=2).reshape(6, 64)
    np.testing.assert_allclose(
        np.asarray(model.pooled_image(params, jnp.asarray(pooled), 2)),
        np.asarray(model.image(params, jnp.asarray(upsampled))),
        rtol=1e-5,
        atol=1e-5,
    )
    assert model.pooled_image(params, jnp.asarray(pooled), 2).shape == (6, 4)


def test_text_encoder_sums_non_padding_tokens_and_init_bounds() -> None:
    model = jt.mlp_dual_encoder(pixels=64, hidden=16, embed_dim=4, vocab_size=5)
    params = model.init(jax.random.key(3))
    table = np.asarray(params["text"])
    tokens = np.array([[1, 3, 0, 0], [2, 2, 4, 0], [0, 0, 0, 0]], dtype=np.int32)
    got = np.asarray(model.text(params, jnp.asarray(tokens)))
    np.testing.assert_allclose(got[0], table[1] + table[3], rtol=1e-6)
    np.testing.assert_allclose(got[1], 2 * table[2] + table[4], rtol=1e-6)
    np.testing.assert_array_equal(got[2], np.zeros(4))
    # nn.Linear's default initialization: uniform in +-1/sqrt(fan_in).
    for layer, fan_in in (("l1", 64), ("l2", 16)):
        for leaf in ("w", "b"):
            values = np.asarray(params["image"][layer][leaf])
            assert np.abs(values).max() <= 1 / math.sqrt(fan_in)
            if leaf == "w":  # >= 64 draws fill the range (fixed key)
                assert np.abs(values).max() > 0.9 / math.sqrt(fan_in)
                assert abs(np.mean(np.abs(values)) * math.sqrt(fan_in) - 0.5) < 0.1


def test_mlp_dual_encoder_is_cached_and_checked() -> None:
    assert jt.mlp_dual_encoder(pixels=16, hidden=8) is jt.mlp_dual_encoder(pixels=16, hidden=8)
    with pytest.raises(ValueError, match="pixels must be a square"):
        jt.mlp_dual_encoder(pixels=15)
    with pytest.raises(ValueError, match="hidden"):
        jt.mlp_dual_encoder(hidden=0)


# ----------------------------------------------------------------------------------------------
# Selection inside the jitted step equals the spec's selection on NumPy.


@pytest.mark.parametrize("method", demo.METHODS)
def test_step_trains_on_the_demo_selection(method: str, tiny: dict) -> None:
    config = tiny_config(method)
    trainer = jt.SigLIPTrainer(TINY_MODEL, config)
    state = trainer.init(11, param_seed=5)
    data = trainer.prepare(tiny["images"], tiny["tokens"])
    reference = tiny["reference"]
    step = jax.jit(trainer.step)
    demo_config = demo.DemoConfig(batch_size=16, filter_ratio=0.75, n_chunks=4)
    spec = demo.METHOD_SPECS[method]
    rng = np.random.default_rng(0)
    for t in range(3):
        rows = rng.choice(len(tiny["images"]), size=config.super_batch, replace=False)
        learner = None
        if spec.uses_learner:
            images = tiny["images"] if spec.factor == 1 else downsample(tiny["images"], spec.factor)
            emb = trainer.embed(
                state.params, images[rows], tiny["tokens"][rows], factor=spec.factor
            )
            learner = jestcore.PairEmbeddings(
                np.asarray(emb.image), np.asarray(emb.text), float(emb.scale), float(emb.bias)
            )
        ref = jestcore.PairEmbeddings(
            np.asarray(reference.image)[rows],
            np.asarray(reference.text)[rows],
            float(reference.scale),
            float(reference.bias),
        )
        sel = demo.select_sub_batch(method, learner, ref, demo_config, demo.selection_seed(11, t))
        state, info = step(state, data, reference, jnp.asarray(rows, jnp.int32))
        np.testing.assert_array_equal(np.asarray(info.rows), rows[np.asarray(sel)])
        assert np.isfinite(float(info.loss))
    assert int(state.selection.step) == (0 if spec.score is None else 3)


# ----------------------------------------------------------------------------------------------
# Training: every method learns, and each compiles once.


class CountingModel:
    """A user model (linear image encoder, mean-of-embeddings text) that counts its traces."""

    def __init__(self) -> None:
        self.traces = 0

        def init(key: jax.Array) -> dict[str, jax.Array]:
            k1, k2 = jax.random.split(key)
            return {
                "w": jax.random.normal(k1, (PIXELS, 8)) / 4.0,
                "table": jax.random.normal(k2, (VOCAB, 8)),
            }

        def image(params: dict, images: jax.Array) -> jax.Array:
            self.traces += 1
            return images @ params["w"]

        def pooled_image(params: dict, pooled: jax.Array, factor: int) -> jax.Array:
            self.traces += 1
            w = jnp.sum(jnp.reshape(params["w"], (2, factor, 2, factor, 8)), axis=(1, 3))
            return pooled @ jnp.reshape(w, (4, 8))

        def text(params: dict, tokens: jax.Array) -> jax.Array:
            return jnp.mean(jnp.take(params["table"], tokens, axis=0), axis=1)

        self.encoder = jt.DualEncoder(init, image, text, pooled_image)


@pytest.mark.parametrize("method", demo.METHODS)
def test_every_method_learns_and_compiles_once(method: str, tiny: dict) -> None:
    counting = CountingModel()
    trainer = jt.SigLIPTrainer(counting.encoder, tiny_config(method, steps=60))
    images, tokens, reference = tiny["images"], tiny["tokens"], tiny["reference"]
    evals: list[int] = []
    state, losses = trainer.fit(
        trainer.init(0),
        images,
        tokens,
        reference=reference,
        eval_every=25,
        on_eval=lambda step, s: evals.append(step),
    )
    traces = counting.traces
    assert traces > 0
    assert evals == [25, 50, 60]
    assert losses.shape == (60,) and np.all(np.isfinite(losses))
    assert losses[-10:].mean() < 0.8 * losses[:10].mean()
    # Another seed (so other super-batches, selections, initialization) and another
    # reference: no new compilation.
    other_reference = jestcore.PairEmbeddings(
        reference.image[::-1], reference.text[::-1], reference.scale * 2, reference.bias
    )
    state2, losses2 = trainer.fit(
        trainer.init(3), images, tokens, reference=other_reference, eval_every=25
    )
    assert counting.traces == traces
    assert losses2.shape == (60,)
    assert not np.allclose(np.asarray(state.params["encoder"]["w"]), state2.params["encoder"]["w"])


def test_demo_model_learns_the_tiny_problem_zero_shot(tiny: dict) -> None:
    """After training with JEST the learner classifies held-out images by their class word."""
    trainer = jt.SigLIPTrainer(TINY_MODEL, tiny_config("jest", steps=80))
    state, _ = trainer.fit(
        trainer.init(1), tiny["images"], tiny["tokens"], reference=tiny["reference"]
    )
    test_images, _, labels, _ = tiny_data(n=200, seed=1, wrong=0.0)
    prompts = np.zeros((N_CLASSES, 3), dtype=np.int32)
    prompts[:, 0] = np.arange(N_CLASSES) + 1
    image = trainer.embed(state.params, test_images, np.zeros((200, 3), np.int32)).image
    text = trainer.embed(state.params, test_images[:N_CLASSES], prompts).text
    acc = np.mean(np.argmax(np.asarray(image) @ np.asarray(text).T, axis=1) == labels)
    assert acc > 0.9


# ----------------------------------------------------------------------------------------------
# The same run as the PyTorch trainer, from the same weights.


def _torch_model(params: dict) -> object:
    import torch
    from jestcore.adapters.torch import trainer as tt

    hidden = params["encoder"]["image"]["l1"]["w"].shape[1]
    dim = params["encoder"]["text"].shape[1]
    loss = "sigmoid" if "bias" in params else "softmax"  # a CLIP model has no bias
    model = tt.DualEncoder(tt.ImageMLP(PIXELS, hidden, dim), tt.BagOfWords(VOCAB, dim), loss=loss)
    p = jax.tree.map(lambda a: torch.from_numpy(np.array(a, dtype=np.float32)), params)
    with torch.no_grad():
        model.image_encoder.fc1.weight.copy_(p["encoder"]["image"]["l1"]["w"].T)
        model.image_encoder.fc1.bias.copy_(p["encoder"]["image"]["l1"]["b"])
        model.image_encoder.fc2.weight.copy_(p["encoder"]["image"]["l2"]["w"].T)
        model.image_encoder.fc2.bias.copy_(p["encoder"]["image"]["l2"]["b"])
        table = p["encoder"]["text"].clone()
        table[0] = 0.0
        model.text_encoder.embedding.weight.copy_(table)
        model.log_scale.copy_(p["log_scale"])
        if loss == "sigmoid":
            model.bias.copy_(p["bias"])
    return model


@pytest.mark.parametrize(
    ("method", "loss"),
    [
        ("uniform", "sigmoid"),
        ("jest", "sigmoid"),
        ("flexi_jest", "sigmoid"),
        ("independent", "sigmoid"),
        ("uniform", "softmax"),
        ("jest", "softmax"),
        ("independent", "softmax"),
    ],
)
def test_same_trajectory_as_the_torch_trainer(method: str, loss: str, tiny: dict) -> None:
    """From the same weights, data and seeds, both trainers take the same steps."""
    from jestcore.adapters.torch import trainer as tt

    steps, seed = 12, 4
    config = tiny_config(method, steps=steps, learning_rate=3e-3, warmup_fraction=0.25, loss=loss)
    trainer = jt.SigLIPTrainer(TINY_MODEL, config)
    state = trainer.init(seed, param_seed=9)
    model = _torch_model(state.params)
    images, tokens, reference = tiny["images"], tiny["tokens"], tiny["reference"]
    reference_np = jestcore.PairEmbeddings(
        np.asarray(reference.image),
        np.asarray(reference.text),
        float(reference.scale),
        float(reference.bias),
    )
    history = tt.train(
        model,
        images,
        tokens,
        steps=steps,
        batch_size=16,
        method=method,
        reference=reference_np,
        filter_ratio=0.75,
        n_chunks=4,
        loss=loss,
        learning_rate=3e-3,
        warmup_fraction=0.25,
        seed=seed,
        scoring_images=downsample(images, 2) if method == "flexi_jest" else None,
        evaluate_every=steps,
        evaluate=lambda m, step: {k: v.detach().numpy().copy() for k, v in m.state_dict().items()},
    )
    torch_params = history[-1][1]
    state, _ = trainer.fit(state, images, tokens, reference=reference_np)
    p = state.params["encoder"]
    pairs = [
        (p["image"]["l1"]["w"].T, torch_params["image_encoder.fc1.weight"]),
        (p["image"]["l2"]["w"].T, torch_params["image_encoder.fc2.weight"]),
        (p["image"]["l1"]["b"], torch_params["image_encoder.fc1.bias"]),
        (p["text"][1:], torch_params["text_encoder.embedding.weight"][1:]),
        (state.params["log_scale"], torch_params["log_scale"]),
    ]
    if loss == "sigmoid":
        pairs.append((state.params["bias"], torch_params["bias"]))
    else:  # no bias parameter: a constant 0
        assert "bias" not in state.params and float(torch_params["bias"]) == 0.0
    start = _torch_model(trainer.init(seed, param_seed=9).params).state_dict()
    # float32 round-off of two frameworks over 12 Adam steps: observed <= 1e-6.
    for got, expected in pairs:
        np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-5)
    # The runs moved the weights by much more than the tolerance.
    moved = np.abs(
        torch_params["image_encoder.fc1.weight"] - start["image_encoder.fc1.weight"].numpy()
    )
    assert moved.max() > 1000 * 1e-5


# ----------------------------------------------------------------------------------------------
# Errors.


def test_bad_input_raises_naming_the_argument(tiny: dict) -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        jt.TrainConfig(steps=10, method="best")
    with pytest.raises(ValueError, match="n_chunks must be at most batch_size"):
        jt.TrainConfig(steps=10, batch_size=4, n_chunks=8)
    with pytest.raises(ValueError, match="filter_ratio"):
        jt.TrainConfig(steps=10, filter_ratio=1.0)
    with pytest.raises(TypeError, match="model must be a DualEncoder"):
        jt.SigLIPTrainer(object(), tiny_config("jest"))  # type: ignore[arg-type]
    no_pool = TINY_MODEL._replace(pooled_image=None)
    with pytest.raises(ValueError, match="pooled_image"):
        jt.SigLIPTrainer(no_pool, tiny_config("flexi_jest"))
    trainer = jt.SigLIPTrainer(TINY_MODEL, tiny_config("jest"))
    with pytest.raises(ValueError, match="needs reference embeddings"):
        trainer.fit(trainer.init(0), tiny["images"], tiny["tokens"])
    with pytest.raises(TypeError, match="tokens must be an integer array"):
        trainer.prepare(tiny["images"], tiny["tokens"].astype(np.float32))
    with pytest.raises(ValueError, match="need at least 64 training rows"):
        trainer.prepare(tiny["images"][:10], tiny["tokens"][:10])
    with pytest.raises(ValueError, match="seed must be an int"):
        trainer.init(-1)
    with pytest.raises(TypeError, match="model must be a"):
        jb.embed("model", tiny["images"], tiny["tokens"])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# The demo with the JAX backend.

SMALL_DATA = DigitsConfig(augmentations=6)


@pytest.mark.slow
def test_quick_demo_with_the_jax_backend(tmp_path: object) -> None:
    """A short demo run: the results' shape, and JEST ahead of uniform by a clear margin."""
    config = demo.DemoConfig.quick(
        steps=200, seeds=2, reference_steps=200, eval_every=25, data=SMALL_DATA
    )
    results = demo.run_demo(config, backend="jax", out=tmp_path, progress=False)
    assert results["backend"] == "jax"
    assert isinstance(results["target_accuracy"], float)
    assert set(results["methods"]) == {"uniform", "jest"}
    for entry in results["methods"].values():
        for key in ("final_accuracy", "steps_to_target", "flops_to_target"):
            assert len(entry[key]) == 2
    uniform = np.mean(results["methods"]["uniform"]["final_accuracy"])
    jest = np.mean(results["methods"]["jest"]["final_accuracy"])
    assert jest > uniform + 0.1
    assert min(results["reference"]["zero_shot"]) > 0.6
