"""The PyTorch reference trainer (models, loss, schedule, training on user arrays) and the demo's
PyTorch backend (:mod:`jestcore.adapters.demo.torch_backend`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from jestcore.adapters import demo, recipe
from jestcore.adapters.demo import torch_backend as TB
from jestcore.adapters.demo.digits import make_digits
from jestcore.adapters.recipe import downsample
from jestcore.adapters.torch import select_batch
from jestcore.adapters.torch import trainer as T
from torch import nn

import jestcore


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread (spinning threads crawl on a shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_image_mlp_pooled_input_equals_full_resolution_on_upsampled_images() -> None:
    torch.manual_seed(0)
    mlp = T.ImageMLP(64, 32, 8)
    images = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    low = downsample(images, 2)  # (5, 16): 2x2 block means
    upsampled = low.reshape(5, 4, 1, 4, 1).repeat(2, axis=2).repeat(2, axis=4).reshape(5, 64)
    with torch.no_grad():
        got = mlp(torch.from_numpy(low))
        want = mlp(torch.from_numpy(upsampled))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pixels"):
        mlp(torch.zeros(2, 10))


def test_bag_of_words_ignores_padding_and_order() -> None:
    bow = T.BagOfWords(10, 4)
    a = torch.tensor([[3, 5, 0, 0]])
    b = torch.tensor([[5, 3, 0, 0]])
    c = torch.tensor([[5, 3, 0, 0, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(bow(a), bow(b))
        torch.testing.assert_close(bow(a), bow(c))
        torch.testing.assert_close(bow(a)[0], bow.embedding.weight[3] + bow.embedding.weight[5])


def test_siglip_loss_against_a_literal_sum() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3))
    y = rng.normal(size=(6, 3))
    scale, bias = 4.0, -2.0
    want = 0.0
    for i in range(6):
        for j in range(6):
            z = 1.0 if i == j else -1.0
            logit = scale * float(x[i] @ y[j]) + bias
            want += math.log1p(math.exp(-z * logit))
    want /= 6
    out = jestcore.PairEmbeddings(
        torch.from_numpy(x), torch.from_numpy(y), torch.tensor(scale), torch.tensor(bias)
    )
    assert float(T.siglip_loss(out)) == pytest.approx(want, rel=1e-12)
    # And it agrees with the spec's loss matrix.
    matrix = jestcore.sigmoid_loss_matrix(x, y, scale=scale, bias=bias)
    assert float(T.siglip_loss(out)) == pytest.approx(matrix.sum() / 6, rel=1e-12)


def test_dual_encoder_outputs_and_seeded_initialization() -> None:
    encoders = [(T.ImageMLP(64, 16, 8), T.BagOfWords(34, 8)) for _ in range(3)]
    state = torch.random.get_rng_state()  # (building the encoders draws from it)
    a = T.DualEncoder(*encoders[0], generator=3)
    b = T.DualEncoder(*encoders[1], generator=3)
    c = T.DualEncoder(*encoders[2], generator=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # re-initializing does not
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.image_encoder.fc1.weight, c.image_encoder.fc1.weight)
    assert torch.all(a.text_encoder.embedding.weight[0] == 0)  # padding row
    out = a(torch.rand(5, 64), torch.randint(0, 34, (5, 8)))
    assert isinstance(out, jestcore.PairEmbeddings)
    torch.testing.assert_close(out.image.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(out.text.norm(dim=1), torch.ones(5))
    assert out.scale.item() == pytest.approx(10.0) and out.bias.item() == -10.0


class TinyConvImage(nn.Module):
    """A user image encoder on (n, 1, 8, 8) images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


class MeanTokens(nn.Module):
    """A user text encoder: mean of token embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(34, 8)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens.long()).mean(dim=1)


@pytest.fixture(scope="module")
def small_data():
    return make_digits(demo.DemoConfig.quick().data)


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_train_user_model_on_user_arrays_with_jest(small_data) -> None:
    pool = small_data.pool
    images = pool.images[:3000].reshape(-1, 1, 8, 8)  # a user layout, NumPy
    tokens = torch.from_numpy(pool.tokens[:3000].copy())  # and a torch tensor
    reference_model = T.DualEncoder(TinyConvImage(), MeanTokens(), generator=1)
    reference = T.embed_arrays(reference_model, images, tokens)  # cached once

    def fresh() -> T.DualEncoder:
        return T.DualEncoder(TinyConvImage(), MeanTokens(), generator=2)

    seen: list[int] = []
    model = fresh()
    before = _params(model)
    history = T.train(
        model,
        images,
        tokens,
        steps=12,
        batch_size=16,
        n_chunks=4,
        method="jest",
        reference=reference,
        seed=5,
        evaluate_every=5,
        evaluate=lambda m, step: seen.append(step) or step * 10,
    )
    assert seen == [0, 5, 10, 12] and history == [(s, 10 * s) for s in seen]
    after = _params(model)
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True) if a.ndim > 0)
    # The same call again gives the same model, bit for bit.
    again = fresh()
    T.train(again, images, tokens, steps=12, batch_size=16, n_chunks=4, reference=reference, seed=5)
    for a, b in zip(after, _params(again), strict=True):
        assert torch.equal(a, b)


def test_train_trains_on_the_selected_rows(small_data) -> None:
    """The rows of each training step are the spec's joint selection of the super-batch."""
    pool = small_data.pool
    images, tokens = pool.images[:2000], pool.tokens[:2000]
    config = demo.DemoConfig(steps=3, batch_size=8, n_chunks=2, image_hidden=16, embed_dim=8)
    model = TB.demo_model(config, 0)
    reference = T.embed_arrays(TB.demo_model(config, 1), images, tokens)
    trained_rows: list[np.ndarray] = []
    scored: list[jestcore.PairEmbeddings] = []

    class Spy(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> jestcore.PairEmbeddings:
            out = self.inner(x, t)
            if torch.is_grad_enabled():  # the training pass
                trained_rows.append(x.numpy().copy())
            else:  # the scoring pass
                scored.append(jestcore.PairEmbeddings(*(v.detach().clone() for v in out)))
            return out

    batches = [demo.super_batch_indices(2000, config, 9, s) for s in range(3)]
    T.train(
        Spy(model),
        images,
        tokens,
        steps=3,
        batch_size=8,
        n_chunks=2,
        method="jest",
        reference=reference,
        seed=9,
        batches=lambda s: batches[s],
    )
    assert len(trained_rows) == 3 and len(scored) == 3
    for step in range(3):
        rows = batches[step]
        ref = jestcore.PairEmbeddings(
            reference.image[rows], reference.text[rows], reference.scale, reference.bias
        )
        sel = jestcore.joint_select_embeddings(
            scored[step], ref, 8, n_chunks=2, seed=demo.selection_seed(9, step)
        )
        np.testing.assert_array_equal(trained_rows[step], images[rows[sel.numpy()]])


def test_train_rejects_bad_inputs(small_data) -> None:
    pool = small_data.pool
    x, t = pool.images[:500], pool.tokens[:500]
    model = T.DualEncoder(T.ImageMLP(64, 8, 4), T.BagOfWords(34, 4), generator=0)
    with pytest.raises(ValueError, match="method"):
        T.train(model, x, t, steps=1, batch_size=8, method="best")
    with pytest.raises(ValueError, match="seed"):
        T.train(model, x, t, steps=1, batch_size=8, method="uniform", seed=-1)
    with pytest.raises(ValueError, match="batches"):
        T.train(model, x, t, steps=1, batch_size=8, method="uniform", batches=lambda s: [1, 2])
    with pytest.raises(ValueError, match="needs the reference's embeddings"):
        T.train(model, x, t, steps=1, batch_size=8, n_chunks=4, method="jest")
    with pytest.raises(ValueError, match="scoring_images"):
        T.train(model, x, t, steps=1, batch_size=8, n_chunks=4, method="flexi_jest")
    with pytest.raises(ValueError, match="same rows"):
        T.train(model, x, t[:10], steps=1, batch_size=8, method="uniform")
    with pytest.raises(TypeError, match="images"):
        T.train(model, t, t, steps=1, batch_size=8, method="uniform")
    with pytest.raises(TypeError, match="tokens"):
        T.train(model, x, x, steps=1, batch_size=8, method="uniform")
    with pytest.raises(TypeError, match="NumPy array or a torch tensor"):
        T.train(model, x.tolist(), t, steps=1, batch_size=8, method="uniform")
    with pytest.raises(ValueError, match="n_chunks"):
        T.train(model, x, t, steps=1, batch_size=8, n_chunks=16, method="jest", reference=None)
    with pytest.raises(ValueError, match="super-batch N = 40"):
        T.train(model, x[:30], t[:30], steps=1, batch_size=8, method="uniform")
    with pytest.raises(ValueError, match="filter_ratio"):
        T.train(model, x, t, steps=1, batch_size=8, method="uniform", filter_ratio=1.0)
    with pytest.raises(TypeError, match="steps"):
        T.train(model, x, t, steps=1.0, batch_size=8, method="uniform")


def test_demo_backend_protocol_smoke(small_data) -> None:
    config = demo.DemoConfig.quick(steps=20, eval_every=10, reference_steps=10, image_hidden=32)
    steps: list[int] = []
    reference = TB.train_reference(small_data, config, 0, on_step=steps.append)
    assert steps == list(range(1, 11))
    cached = TB.embed(reference, small_data.pool.images, small_data.pool.tokens)
    assert cached.image.dtype == np.float32 and cached.image.shape == (len(small_data.pool), 32)
    np.testing.assert_allclose(np.linalg.norm(cached.text, axis=1), 1.0, rtol=1e-5)
    assert isinstance(cached.scale, float) and isinstance(cached.bias, float)
    evaluations: list[tuple[int, demo.Metrics]] = []
    curves = {}
    for method in demo.METHODS:
        uses_reference = demo.METHOD_SPECS[method].uses_reference
        curves[method] = TB.train_learner(
            small_data,
            cached if uses_reference else None,
            method,
            config,
            0,
            on_eval=lambda s, m: evaluations.append((s, m)),
        )
        assert curves[method].steps.tolist() == demo.eval_steps(config) == [0, 10, 20]
        assert np.all((curves[method].zero_shot >= 0) & (curves[method].zero_shot <= 1))
    assert len(evaluations) == 3 * len(demo.METHODS)
    # One seed, one initialization: every method starts from the same model.
    assert len({(c.zero_shot[0], c.recall_at_1[0]) for c in curves.values()}) == 1
    # Different methods train on different rows, so they end differently.
    assert len({tuple(c.zero_shot) for c in curves.values()}) > 1


@pytest.mark.slow
def test_parallel_workers_give_the_serial_results() -> None:
    config = demo.DemoConfig.quick(
        seeds=1, steps=40, eval_every=20, reference_steps=20, methods=("uniform", "flexi_jest")
    )
    serial = demo.run_demo(config, progress=False, workers=1)
    parallel = demo.run_demo(config, progress=False, workers=2)
    assert parallel["workers"] == 2 and serial["workers"] == 1
    for method in config.methods:
        assert (
            serial["methods"][method]["curves"]["zero_shot"]
            == parallel["methods"][method]["curves"]["zero_shot"]
        )
    assert serial["reference"] == parallel["reference"]


# ----------------------------------------------------------------------------------------------
# The quick demo, end to end through the command line: JEST beats uniform sampling.


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from jestcore.adapters.demo.cli import main

    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--no-progress", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    results["_out"] = str(out)
    return results


@pytest.mark.slow
def test_quick_demo_results_shape(quick_demo: dict) -> None:
    config = demo.DemoConfig.quick()
    assert isinstance(quick_demo["target_accuracy"], float)
    assert set(quick_demo["methods"]) == set(config.methods)
    for entry in quick_demo["methods"].values():
        for key in ("final_accuracy", "steps_to_target", "flops_to_target"):
            assert len(entry[key]) == config.seeds
        assert all(isinstance(v, float) for v in entry["final_accuracy"])
        assert all(v is None or isinstance(v, int) for v in entry["steps_to_target"])
        assert all(v is None or isinstance(v, float) for v in entry["flops_to_target"])
    assert quick_demo["backend"] == "torch"
    png = Path(quick_demo["_out"]) / "curves.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_quick_demo_jest_beats_uniform(quick_demo: dict) -> None:
    uniform = quick_demo["methods"]["uniform"]
    jest = quick_demo["methods"]["jest"]
    # Every seed: JEST reaches uniform's final accuracy, and well before the end of the run.
    steps = demo.DemoConfig.quick().steps
    assert all(s is not None and s <= steps // 2 for s in jest["steps_to_target"])
    # And it ends clearly higher (seed means; seed-to-seed sd is about 0.01 here).
    assert np.mean(jest["final_accuracy"]) >= np.mean(uniform["final_accuracy"]) + 0.03


def _unit(rng: np.random.Generator, n: int, d: int) -> torch.Tensor:
    x = torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32))
    return x / x.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("method", [m for m in recipe.METHODS if m != "uniform"])
def test_registry_selection_call_is_the_same_in_the_torch_adapter_and_the_spec(method: str) -> None:
    """One mapping from a method to a selection call: the trainer's (the torch adapter's
    select_batch with the method's score and chunks) gives the demo's spec selection."""
    rng = np.random.default_rng(4)
    config = demo.DemoConfig(batch_size=16, n_chunks=4)
    spec = recipe.METHOD_SPECS[method]
    learner = jestcore.PairEmbeddings(_unit(rng, 80, 8), _unit(rng, 80, 8), 10.0, -10.0)
    reference = jestcore.PairEmbeddings(_unit(rng, 80, 8), _unit(rng, 80, 8), 12.0, -9.0)
    for seed in range(3):
        adapter = select_batch(
            torch.arange(80),
            learner if spec.uses_learner else None,
            reference if spec.uses_reference else None,
            batch_size=16,
            n_chunks=spec.n_chunks(config.n_chunks),
            score=spec.score,
            seed=seed,
        ).indices
        spec_indices = demo.select_sub_batch(method, learner, reference, config, seed)
        assert adapter.dtype == torch.int64 and adapter.shape == (16,)
        assert torch.equal(adapter, spec_indices)


def test_lr_scheduler_gives_the_recipe_schedule() -> None:
    peak, total, warmup = 3e-3, 40, 0.1
    param = nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.Adam([param], lr=peak)
    scheduler = T.learning_rate_scheduler(optimizer, total_steps=total, warmup_fraction=warmup)
    got = []
    for _ in range(total):
        got.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    want = [recipe.learning_rate(t, total, peak=peak, warmup_fraction=warmup) for t in range(total)]
    np.testing.assert_allclose(got, want, rtol=4 * np.sqrt(np.finfo(np.float64).eps), atol=0)
    assert got[0] == pytest.approx(peak / 4) and got[3] == pytest.approx(peak)  # 4 warm-up steps
    with pytest.raises(ValueError, match="warmup_fraction"):
        T.learning_rate_scheduler(optimizer, total_steps=total, warmup_fraction=1.0)
    with pytest.raises(TypeError, match="total_steps"):
        T.learning_rate_scheduler(optimizer, total_steps=4.0, warmup_fraction=0.1)


def test_train_with_a_reference_embedding_cache(small_data, tmp_path: Path) -> None:
    from jestcore.adapters.torch import precompute_reference_embeddings

    pool = small_data.pool
    images, tokens, ids = pool.images[:1500], pool.tokens[:1500], pool.example_ids[:1500]
    config = demo.DemoConfig(batch_size=16, n_chunks=4, image_hidden=16, embed_dim=8)
    reference_model = TB.demo_model(config, 1)
    loader = [
        (
            ids[i : i + 500],
            (torch.from_numpy(images[i : i + 500]), torch.from_numpy(tokens[i : i + 500])),
        )
        for i in range(0, 1500, 500)
    ]

    def forward(model: nn.Module, batch: tuple) -> jestcore.PairEmbeddings:
        # Detached: the cache's float(bias) of a Parameter would warn (reported upstream).
        return jestcore.PairEmbeddings(*(v.detach() for v in model(*batch[1])))

    cache = precompute_reference_embeddings(
        reference_model, loader, tmp_path / "cache", forward=forward, progress=False
    )
    arrays = T.embed_arrays(reference_model, images, tokens)
    trained = []
    for reference, example_ids in ((cache, ids), (arrays, None)):
        model = TB.demo_model(config, 0)
        T.train(
            model,
            images,
            tokens,
            steps=5,
            batch_size=16,
            n_chunks=4,
            reference=reference,
            example_ids=example_ids,
            seed=2,
        )
        trained.append(_params(model))
    for a, b in zip(*trained, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="example_ids"):
        T.train(
            TB.demo_model(config, 0),
            images,
            tokens,
            steps=1,
            batch_size=16,
            n_chunks=4,
            reference=cache,
        )
    with pytest.raises(KeyError, match="not in the cache"):
        T.train(
            TB.demo_model(config, 0),
            images,
            tokens,
            steps=1,
            batch_size=16,
            n_chunks=4,
            reference=cache,
            example_ids=ids + 10**9,
        )


def test_flexi_jest_co_trains_the_low_resolution_on_the_odd_half(small_data) -> None:
    """Algorithm 2: score at 4x4, train selected [::2] at 8x8 and [1::2] at 4x4, both with
    gradients (the low-resolution path is co-trained)."""
    pool = small_data.pool
    images, tokens = pool.images[:2000], pool.tokens[:2000]
    low = downsample(images, 2)
    config = demo.DemoConfig(steps=2, batch_size=8, n_chunks=2, image_hidden=16, embed_dim=8)
    model = TB.demo_model(config, 0)
    reference = T.embed_arrays(TB.demo_model(config, 1), images, tokens)
    trained: list[np.ndarray] = []
    scored: list[jestcore.PairEmbeddings] = []
    low_grads: list[torch.Tensor] = []

    class Spy(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> jestcore.PairEmbeddings:
            out = self.inner(x, t)
            if not torch.is_grad_enabled():
                scored.append(jestcore.PairEmbeddings(*(v.detach().clone() for v in out)))
                return out
            trained.append(x.numpy().copy())
            if x.shape[1] == 16:  # the low-resolution half: record its embeddings' gradient
                out.image.register_hook(lambda g: low_grads.append(g.detach().clone()))
            return out

    batches = [demo.super_batch_indices(2000, config, 3, s) for s in range(2)]
    T.train(
        Spy(model),
        images,
        tokens,
        steps=2,
        batch_size=8,
        n_chunks=2,
        method="flexi_jest",
        reference=reference,
        scoring_images=low,
        seed=3,
        batches=lambda s: batches[s],
    )
    assert len(scored) == 2 and all(s.image.shape == (40, 8) for s in scored)
    assert len(trained) == 4 and len(low_grads) == 2  # two halves per step
    full_half, low_half = recipe.flexi_split(8)
    for step in range(2):
        rows = batches[step]
        ref = jestcore.PairEmbeddings(
            reference.image[rows], reference.text[rows], reference.scale, reference.bias
        )
        sel = jestcore.joint_select_embeddings(
            scored[step], ref, 8, n_chunks=2, seed=demo.selection_seed(3, step)
        ).numpy()
        chosen = rows[sel]
        np.testing.assert_array_equal(trained[2 * step], images[chosen[full_half]])
        np.testing.assert_array_equal(trained[2 * step + 1], low[chosen[low_half]])
        assert trained[2 * step].shape == (4, 64) and trained[2 * step + 1].shape == (4, 16)
        assert low_grads[step].shape == (4, 8) and float(low_grads[step].abs().sum()) > 0


def test_flexi_jest_needs_two_rows(small_data) -> None:
    pool = small_data.pool
    model = T.DualEncoder(T.ImageMLP(64, 8, 4), T.BagOfWords(34, 4), generator=0)
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        T.train(
            model,
            pool.images[:100],
            pool.tokens[:100],
            steps=1,
            batch_size=1,
            n_chunks=1,
            method="flexi_jest",
            reference=None,
            scoring_images=downsample(pool.images[:100], 2),
        )


@pytest.mark.parametrize(
    ("method", "filter_ratio", "adam_beta2", "want"),
    [
        ("uniform", 0.8, None, 0.999),
        ("jest", 0.8, None, 0.95),
        ("flexi_jest", 0.8, None, 0.95),
        ("hard_learner", 0.5, None, 0.95),
        ("easy_reference", 0.8, None, 0.95),
        ("independent", 0.8, None, 0.95),
        ("jest", 0.0, None, 0.999),  # f = 0 filters nothing
        ("jest", 0.8, 0.98, 0.98),
    ],
)
def test_adam_betas_per_method(
    small_data, monkeypatch: pytest.MonkeyPatch, method, filter_ratio, adam_beta2, want
) -> None:
    seen: list[tuple[float, float]] = []

    class Recording(torch.optim.Adam):
        def __init__(self, params, **kwargs) -> None:
            super().__init__(params, **kwargs)
            seen.append(tuple(self.defaults["betas"]))

    monkeypatch.setattr(torch.optim, "Adam", Recording)
    pool = small_data.pool
    x, t = pool.images[:500], pool.tokens[:500]
    model = T.DualEncoder(T.ImageMLP(64, 8, 4), T.BagOfWords(len(TB.VOCAB), 4), generator=0)
    spec = recipe.method_spec(method)
    T.train(
        model,
        x,
        t,
        steps=1,
        batch_size=8,
        n_chunks=2,
        method=method,
        filter_ratio=filter_ratio,
        reference=T.embed_arrays(model, x, t) if spec.uses_reference else None,
        scoring_images=downsample(x, 2) if spec.factor > 1 else None,
        adam_beta2=adam_beta2,
    )
    assert seen == [(0.9, want)]
    assert recipe.adam_beta2(method, filter_ratio) == (want if adam_beta2 is None else 0.95)


def test_adam_beta2_is_checked(small_data) -> None:
    pool = small_data.pool
    model = T.DualEncoder(T.ImageMLP(64, 8, 4), T.BagOfWords(34, 4), generator=0)
    for bad, error in ((1.0, ValueError), (-0.1, ValueError), ("0.9", TypeError)):
        with pytest.raises(error, match="adam_beta2"):
            T.train(
                model, pool.images[:100], pool.tokens[:100], steps=1, batch_size=8,
                method="uniform", adam_beta2=bad,
            )  # fmt: skip
