"""A minimal SigLIP dual-encoder trainer in PyTorch, with JEST data selection.

Two layers:

* **General** (your arrays, your models): :class:`DualEncoder` wraps any image encoder and text
  encoder (``nn.Module`` s that return embeddings) with L2 normalization and SigLIP's learnable
  temperature and bias; :func:`siglip_loss` is the loss; :func:`train` trains a dual encoder on
  image/token arrays with uniform sampling or a selection method (the spec's streaming joint
  selection or independent selection, through :func:`jestcore.adapters.torch.select_batch` on
  accelerators), reference embeddings from arrays or an
  :class:`~jestcore.adapters.torch.EmbeddingCache`, Adam with warm-up and cosine decay, and an
  evaluation callback; :func:`embed_arrays` embeds arrays in batches without gradients.
* **Demo backend** (the :class:`jestcore.adapters.demo.Trainer` protocol):
  :func:`train_reference`, :func:`embed` and :func:`train_learner` run the recipe of
  :mod:`jestcore.adapters.demo` with :func:`demo_model` (an image MLP whose first layer
  also takes pooled images, for Flexi scoring, and a bag-of-words text encoder).

Example:
    >>> import numpy as np, torch
    >>> rng = np.random.default_rng(0)
    >>> images = rng.random((256, 64), dtype=np.float32)
    >>> tokens = rng.integers(1, 34, size=(256, 8)).astype(np.int32)
    >>> model = DualEncoder(ImageMLP(64, 32, 16), BagOfWords(34, 16), generator=0)
    >>> history = train(model, images, tokens, steps=4, batch_size=16, method="uniform", seed=0)
    >>> len(history)
    0
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jestcore.adapters.demo import (
    METHOD_SPECS,
    METHODS,
    Curve,
    DemoConfig,
    Metrics,
    eval_steps,
    evaluate,
    reference_batch_indices,
    select_sub_batch,
    selection_seed,
    super_batch_indices,
)
from jestcore.adapters.demo import learning_rate as schedule
from jestcore.adapters.digits import Digits, downsample
from jestcore.adapters.text import VOCAB
from jestcore.adapters.torch.cache import EmbeddingCache
from jestcore.adapters.torch.selection import select_batch
from torch import nn

import jestcore

__all__ = [
    "BagOfWords",
    "DualEncoder",
    "ImageMLP",
    "demo_model",
    "embed",
    "embed_arrays",
    "siglip_loss",
    "train",
    "train_learner",
    "train_reference",
]


class ImageMLP(nn.Module):
    """An MLP image encoder on flattened square images that also takes pooled images.

    ``pixels -> hidden -> dim`` with a ReLU. Given images average-pooled by a factor ``k``
    (:func:`jestcore.adapters.digits.downsample`, ``pixels / k**2`` values), the first layer
    uses its weights summed over each ``k x k`` block: exactly the full-resolution layer applied
    to the nearest-neighbour upsampled image, at ``1 / k**2`` of that layer's cost (Flexi
    scoring with shared weights).

    Args:
        pixels: Input pixels of a full-resolution image (a square number).
        hidden: Hidden width.
        dim: Output (embedding) width.
    """

    def __init__(self, pixels: int = 64, hidden: int = 512, dim: int = 32):
        super().__init__()
        side = math.isqrt(pixels)
        if side * side != pixels:
            raise ValueError(f"pixels must be a square number, got {pixels}")
        self.side = side
        self.fc1 = nn.Linear(pixels, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embeds ``(n, pixels)`` images, or ``(n, pixels / k**2)`` images pooled by ``k``."""
        width = images.shape[-1]
        if width == self.side * self.side:
            hidden = self.fc1(images)
        else:
            low = math.isqrt(width)
            if low * low != width or low == 0 or self.side % low:
                raise ValueError(
                    f"images must have {self.side**2} pixels or a pooled square number that "
                    f"divides the side {self.side}, got {width}"
                )
            k = self.side // low
            w = self.fc1.weight.reshape(-1, low, k, low, k).sum(dim=(2, 4)).reshape(-1, width)
            hidden = F.linear(images, w, self.fc1.bias)
        return self.fc2(torch.relu(hidden))


class BagOfWords(nn.Module):
    """A bag-of-words text encoder: the sum of the token embeddings, padding (id 0) excluded.

    Args:
        vocab_size: Number of token ids.
        dim: Embedding width.
    """

    def __init__(self, vocab_size: int = len(VOCAB), dim: int = 32):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embeds ``(n, seq_len)`` integer token ids."""
        return self.embedding(tokens.long()).sum(dim=1)


class DualEncoder(nn.Module):
    """Any image encoder and text encoder as a SigLIP model: unit embeddings, scale and bias.

    ``forward(images, tokens)`` returns a :class:`jestcore.PairEmbeddings` of torch tensors:
    L2-normalized image and text embeddings, ``scale = exp(log_scale)`` and ``bias`` (0-d
    tensors; learnable). Any ``nn.Module`` with that ``forward`` works with :func:`train`.

    Args:
        image_encoder: Maps an image batch to ``(n, d)`` embeddings.
        text_encoder: Maps a token batch to ``(n, d)`` embeddings (same ``d``).
        init_log_scale: Initial log temperature (SigLIP: ``log 10``).
        init_bias: Initial bias (SigLIP: ``-10``).
        generator: If an int, the encoders' parameters are re-initialized with
            :meth:`torch.nn.Module.reset_parameters` under this seed (without touching the global
            RNG state), so one seed gives one model.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        *,
        init_log_scale: float = math.log(10.0),
        init_bias: float = -10.0,
        generator: int | None = None,
    ):
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.log_scale = nn.Parameter(torch.tensor(float(init_log_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))
        if generator is not None:
            _reset(self, generator)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> jestcore.PairEmbeddings:
        """Unit embeddings of the pairs, with the temperature and bias."""
        image = F.normalize(self.image_encoder(images), dim=-1)
        text = F.normalize(self.text_encoder(tokens), dim=-1)
        return jestcore.PairEmbeddings(image, text, self.log_scale.exp(), self.bias)


def _reset(module: nn.Module, seed: int) -> None:
    """Re-initializes every submodule that has ``reset_parameters`` under ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if sub is not module and callable(reset):
                reset()  # (nn.Embedding's zeroes its padding row)


def demo_model(config: DemoConfig, seed: int) -> DualEncoder:
    """The demo's dual encoder (see :mod:`jestcore.adapters.demo`), initialized from ``seed``.

    Args:
        config: Widths and SigLIP initialization.
        seed: Initialization seed.

    Returns:
        A :class:`DualEncoder` of an :class:`ImageMLP` and a :class:`BagOfWords`.
    """
    return DualEncoder(
        ImageMLP(64, config.image_hidden, config.embed_dim),
        BagOfWords(len(VOCAB), config.embed_dim),
        init_log_scale=config.init_log_scale,
        init_bias=config.init_bias,
        generator=seed,
    )


def siglip_loss(model_output: jestcore.PairEmbeddings) -> torch.Tensor:
    """SigLIP's loss of a batch: ``-(1/n) sum_ij log sigmoid(z_ij (scale <x_i, y_j> + bias))``.

    Args:
        model_output: ``(image, text, scale, bias)`` of ``n`` pairs; ``z_ij = 1`` iff ``i == j``.

    Returns:
        A 0-d tensor.
    """
    image, text, scale, bias = model_output
    logits = scale * image @ text.T + bias
    n = logits.shape[0]
    signs = 2.0 * torch.eye(n, dtype=logits.dtype, device=logits.device) - 1.0
    return -F.logsigmoid(signs * logits).sum() / n


def _as_tensor(name: str, x: Any, *, integer: bool = False) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x)
        t = torch.from_numpy(x if x.flags.writeable else x.copy())  # torch refuses read-only
    else:
        raise TypeError(f"{name} must be a NumPy array or a torch tensor, got {type(x).__name__}")
    if integer and (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool):
        raise TypeError(f"{name} must hold integer token ids, got dtype {t.dtype}")
    if not integer and not t.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating, got dtype {t.dtype}")
    return t


@torch.no_grad()
def embed_arrays(
    model: nn.Module, images: Any, tokens: Any, *, batch_size: int = 4096
) -> jestcore.PairEmbeddings:
    """The model's embeddings of image/token arrays, in batches, without gradients.

    Args:
        model: A :class:`DualEncoder` (or a module with the same ``forward``).
        images: ``(n, ...)`` images (NumPy or torch).
        tokens: ``(n, seq_len)`` token ids (NumPy or torch).
        batch_size: Rows per forward pass.

    Returns:
        A :class:`jestcore.PairEmbeddings` of torch tensors on the model's device (image, text
        ``(n, d)``; scale and bias 0-d), detached.
    """
    x, t = _as_tensor("images", images), _as_tensor("tokens", tokens, integer=True)
    if x.shape[0] != t.shape[0]:
        raise ValueError(
            f"images and tokens must have the same rows, got {x.shape[0]}, {t.shape[0]}"
        )
    device = next(iter(model.parameters())).device
    was_training = model.training
    model.eval()
    try:
        parts = [
            model(x[i : i + batch_size].to(device), t[i : i + batch_size].to(device))
            for i in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    if not parts:
        raise ValueError("images must hold at least one row")
    return jestcore.PairEmbeddings(
        torch.cat([p.image for p in parts]).detach(),
        torch.cat([p.text for p in parts]).detach(),
        parts[0].scale.detach(),
        parts[0].bias.detach(),
    )


def _index(m: jestcore.PairEmbeddings, idx: torch.Tensor) -> jestcore.PairEmbeddings:
    return jestcore.PairEmbeddings(m.image[idx], m.text[idx], m.scale, m.bias)


def _host(m: jestcore.PairEmbeddings | None) -> jestcore.PairEmbeddings | None:
    """NumPy views of CPU embeddings (no copy); other devices stay as they are."""
    if m is None or m.image.device.type != "cpu":
        return m
    return jestcore.PairEmbeddings(
        m.image.detach().numpy(), m.text.detach().numpy(), _float(m.scale), _float(m.bias)
    )


def _float(x: Any) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def _select(
    method: str,
    learner: jestcore.PairEmbeddings | None,
    reference: jestcore.PairEmbeddings | None,
    config: DemoConfig,
    seed: int,
    *,
    on_host: bool | None = None,
) -> torch.Tensor:
    """The selected positions of the super-batch, as a torch tensor on the embeddings' device.

    Off the CPU (``on_host=False``) this is the PyTorch adapter's
    :func:`jestcore.adapters.torch.select_batch`. On the CPU (the default there) the spec runs
    on NumPy views of the tensors instead: the same arithmetic and the same portable noise, so
    the same indices (up to floating-point near-ties), at a third of the per-operation overhead
    of PyTorch for the demo's small shapes (measured: ~11 ms against ~36 ms per selection of 64
    from 320 on a busy 2-core machine).
    """
    spec = METHOD_SPECS[method]
    models = [m for m in (learner, reference) if m is not None]
    device = models[0].image.device
    if on_host is None:
        on_host = all(m.image.device.type == "cpu" for m in models)
    if on_host:
        sel = select_sub_batch(method, _host(learner), _host(reference), config, seed)
        return torch.from_numpy(np.asarray(sel, dtype=np.int64)).to(device)
    positions = torch.arange(models[0].image.shape[0], device=device)
    return select_batch(
        positions,
        learner if spec.uses_learner else None,
        reference if spec.uses_reference else None,
        batch_size=config.batch_size,
        n_chunks=config.n_chunks,
        score=spec.score,
        method="independent" if spec.selection == "independent_diagonal" else "joint",
        seed=seed,
    ).indices


def _reference_lookup(
    reference: Any, example_ids: Any, n: int, method: str
) -> Callable[[torch.Tensor], jestcore.PairEmbeddings]:
    """``rows -> the reference's embeddings of those rows``, from arrays or a cache."""
    if reference is None:
        raise ValueError(
            f"method {method!r} needs the reference's embeddings of all {n} rows (a "
            "PairEmbeddings, or an EmbeddingCache with example_ids)"
        )
    if isinstance(reference, EmbeddingCache):
        if not reference.is_pair:
            raise ValueError("reference must be a cache of PairEmbeddings (image/text), not values")
        if example_ids is None:
            raise ValueError("reference is an EmbeddingCache: give example_ids (one per row)")
        ids = np.asarray(example_ids)
        if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"example_ids must be {n} integer ids, got shape {ids.shape}")
        reference.positions(ids)  # every id must be cached (KeyError naming the missing ones)
        cache = reference

        def from_cache(rows: torch.Tensor) -> jestcore.PairEmbeddings:
            out = cache.lookup(ids[rows.numpy()], dtype=torch.float32)
            return jestcore.PairEmbeddings(out.image, out.text, _float(out.scale), _float(out.bias))

        return from_cache
    embeddings = _as_torch_embeddings(reference)
    if embeddings.image.shape[0] != n or embeddings.text.shape[0] != n:
        raise ValueError(f"reference must embed all {n} rows, got {embeddings.image.shape[0]}")
    return lambda rows: _index(embeddings, rows)


def _as_torch_embeddings(reference: Any) -> jestcore.PairEmbeddings:
    if not isinstance(reference, tuple) or len(reference) != 4:
        raise TypeError(
            "reference must be a PairEmbeddings(image, text, scale, bias) of the whole pool, got "
            f"{type(reference).__name__}"
        )
    image, text, scale, bias = reference
    return jestcore.PairEmbeddings(
        _as_tensor("reference.image", image),
        _as_tensor("reference.text", text),
        _float(scale),
        _float(bias),
    )


def train(
    model: nn.Module,
    images: Any,
    tokens: Any,
    *,
    steps: int,
    batch_size: int,
    method: str = "jest",
    reference: jestcore.PairEmbeddings | None = None,
    filter_ratio: float = 0.8,
    n_chunks: int = 16,
    learning_rate: float = 1e-3,
    warmup_fraction: float = 0.05,
    seed: int = 0,
    scoring_images: Any = None,
    example_ids: Any = None,
    batches: Callable[[int], np.ndarray] | None = None,
    evaluate_every: int | None = None,
    evaluate: Callable[[nn.Module, int], Any] | None = None,
) -> list[tuple[int, Any]]:
    """Trains a SigLIP dual encoder on arrays, sampling uniformly or selecting with JEST.

    Every step draws a super-batch of ``N = round(b / (1 - f))`` rows (``b`` for uniform
    sampling), scores it with the learner (in eval mode, no gradients) and/or the cached
    ``reference`` embeddings, selects ``b`` rows (the spec's streaming joint selection, or
    independent selection on each pair's own score; see :func:`_select`) and takes one Adam
    step on their SigLIP loss, at a learning rate with linear warm-up and cosine decay to zero.
    The model is updated in place; the arrays stay where they are (e.g. CPU) and each step's
    rows are moved to the model's device.

    Args:
        model: A :class:`DualEncoder`, or any module whose ``forward(images, tokens)`` returns
            ``(image, text, scale, bias)`` with unit embeddings.
        images: ``(n, ...)`` training images (NumPy or torch, floating).
        tokens: ``(n, seq_len)`` token ids (NumPy or torch, integer).
        steps: Training steps.
        batch_size: ``b``, the rows trained on per step.
        method: One of :data:`jestcore.adapters.demo.METHODS`.
        reference: The frozen reference's embeddings of all ``n`` rows, computed once: a
            :class:`jestcore.PairEmbeddings` (NumPy or torch), or an
            :class:`jestcore.adapters.torch.EmbeddingCache` (from
            :func:`jestcore.adapters.torch.precompute_reference_embeddings`) looked up by
            ``example_ids``. Needed by methods that use the reference.
        filter_ratio: ``f``, the fraction of each super-batch that is filtered out.
        n_chunks: Chunks of joint selection.
        learning_rate: Peak learning rate.
        warmup_fraction: Fraction of ``steps`` of linear warm-up.
        seed: Seed of the super-batches (unless ``batches`` is given) and of the selection.
        scoring_images: The images the learner scores with (e.g. pooled, for Flexi scoring);
            ``None`` means ``images``. Needed (``None`` is refused) for ``flexi_jest``.
        example_ids: ``(n,)`` stable integer ids of the rows, to look them up in an
            :class:`~jestcore.adapters.torch.EmbeddingCache` ``reference``.
        batches: ``batches(step)`` gives the step's super-batch rows (``N`` distinct ints, in
            random order); default: a fresh uniform draw per step from ``seed``.
        evaluate_every: Call ``evaluate`` at step 0, every this many steps and after the last.
        evaluate: ``evaluate(model, step)``; its return values are collected.

    Returns:
        The list of ``(step, evaluate(model, step))``; empty without ``evaluate``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range, or a needed input is missing.
    """
    if method not in METHOD_SPECS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    spec = METHOD_SPECS[method]
    if spec.selection == "joint_streaming" and n_chunks > batch_size:
        raise ValueError(f"n_chunks must be at most batch_size = {batch_size}, got {n_chunks}")
    config = DemoConfig(
        steps=steps,
        batch_size=batch_size,
        filter_ratio=filter_ratio,
        n_chunks=min(n_chunks, batch_size),
        learning_rate=learning_rate,
        warmup_fraction=warmup_fraction,
        eval_every=evaluate_every or steps,
    )
    x = _as_tensor("images", images)
    t = _as_tensor("tokens", tokens, integer=True)
    n = x.shape[0]
    if t.shape[0] != n:
        raise ValueError(f"images and tokens must have the same rows, got {n} and {t.shape[0]}")
    score_x = x
    if spec.factor != 1 and scoring_images is None:
        raise ValueError(f"method {method!r} needs scoring_images (the learner's low resolution)")
    if scoring_images is not None:
        score_x = _as_tensor("scoring_images", scoring_images)
        if score_x.shape[0] != n:
            raise ValueError(f"scoring_images must have {n} rows, got {score_x.shape[0]}")
    reference_rows = None
    if spec.uses_reference:
        reference_rows = _reference_lookup(reference, example_ids, n, method)
    if batches is None:

        def batches(step: int) -> np.ndarray:
            return super_batch_indices(n, config, seed, step)

    device = next(iter(model.parameters())).device
    checkpoints = set(eval_steps(config)) if evaluate is not None else set()
    history: list[tuple[int, Any]] = []
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    for step in range(steps + 1):
        if step in checkpoints:
            assert evaluate is not None
            history.append((step, evaluate(model, step)))
        if step == steps:
            break
        rows = torch.from_numpy(np.asarray(batches(step), dtype=np.int64))
        if rows.ndim != 1 or not batch_size <= rows.shape[0] <= n:
            raise ValueError(
                f"batches({step}) must give between batch_size = {batch_size} and {n} row "
                f"indices, got shape {tuple(rows.shape)}"
            )
        if spec.score is None:
            chosen = rows[:batch_size]
        else:
            learner_emb = None
            if spec.uses_learner:
                model.eval()  # scoring is inference (dropout off, batch statistics frozen)
                with torch.no_grad():
                    learner_emb = model(score_x[rows].to(device), t[rows].to(device))
                model.train()
            reference_emb = None
            if reference_rows is not None:
                r = reference_rows(rows)
                reference_emb = r._replace(image=r.image.to(device), text=r.text.to(device))
            sel = _select(method, learner_emb, reference_emb, config, selection_seed(seed, step))
            chosen = rows[sel.cpu()]
        for group in optimizer.param_groups:
            group["lr"] = schedule(step, steps, config)
        loss = siglip_loss(model(x[chosen].to(device), t[chosen].to(device)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return history


# --------------------------------------------------------------------------------------------
# The demo backend (jestcore.adapters.demo.Trainer).


def _numpy_embeddings(m: jestcore.PairEmbeddings) -> jestcore.PairEmbeddings:
    return jestcore.PairEmbeddings(
        m.image.cpu().numpy().astype(np.float32, copy=False),
        m.text.cpu().numpy().astype(np.float32, copy=False),
        float(m.scale),
        float(m.bias),
    )


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Runs the block with ``n`` intra-op threads, then restores the previous setting.

    The demo's models are tiny: more threads only add synchronization, and on a busy machine
    spinning threads slow a step down by an order of magnitude.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _init_seed(seed: int, role: int) -> int:
    return int(np.random.SeedSequence([seed, role]).generate_state(1)[0])


_LEARNER, _REFERENCE = 0, 1


def train_reference(
    data: Digits,
    config: DemoConfig,
    seed: int,
    *,
    on_step: Callable[[int], None] | None = None,
) -> DualEncoder:
    """Trains the demo's reference model on ``data.curated`` (the demo's trainer protocol).

    Args:
        data: The digits data.
        config: The demo config (``reference_steps``, widths, optimization).
        seed: The run's seed.
        on_step: Called with the number of finished steps.

    Returns:
        The trained :class:`DualEncoder`.
    """
    model = demo_model(config, _init_seed(seed, _REFERENCE))
    curated = data.curated
    x = torch.from_numpy(curated.images.copy())
    t = torch.from_numpy(curated.tokens.copy())
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    model.train()
    with _threads(1):
        for step in range(config.reference_steps):
            rows = torch.from_numpy(reference_batch_indices(len(curated), config, seed, step))
            for group in optimizer.param_groups:
                group["lr"] = schedule(step, config.reference_steps, config)
            loss = siglip_loss(model(x[rows], t[rows]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step(step + 1)
    return model


def embed(
    model: nn.Module, images: np.ndarray, tokens: np.ndarray, *, factor: int = 1
) -> jestcore.PairEmbeddings:
    """NumPy embeddings of images (pooled by ``factor`` already) and tokens (the protocol).

    Args:
        model: A :class:`DualEncoder`.
        images: float32 ``(n, 64 / factor**2)`` images.
        tokens: ``(n, seq_len)`` token ids.
        factor: The pooling factor of ``images`` (the model infers it from their width).

    Returns:
        A :class:`jestcore.PairEmbeddings` of NumPy float32 arrays and float scale and bias.
    """
    del factor  # ImageMLP infers the resolution from the input width
    with _threads(1):
        return _numpy_embeddings(embed_arrays(model, images, tokens))


def train_learner(
    data: Digits,
    reference: jestcore.PairEmbeddings | None,
    method: str,
    config: DemoConfig,
    seed: int,
    *,
    on_eval: Callable[[int, Metrics], None] | None = None,
) -> Curve:
    """Trains the demo's learner on ``data.pool`` with ``method`` (the demo's trainer protocol).

    Args:
        data: The digits data.
        reference: Cached reference embeddings of the whole pool (NumPy), or ``None`` for
            methods that do not use the reference.
        method: One of :data:`jestcore.adapters.demo.METHODS`.
        config: The demo config.
        seed: The run's seed.
        on_eval: Called with ``(step, metrics)`` at every evaluation.

    Returns:
        The learner's :class:`jestcore.adapters.demo.Curve`.
    """
    start = time.perf_counter()
    spec = METHOD_SPECS[method]
    model = demo_model(config, _init_seed(seed, _LEARNER))
    pool, test = data.pool, data.test
    prompt_images = test.images[: data.prompts.shape[0]]

    def evaluate_model(model: nn.Module, step: int) -> Metrics:
        metrics = evaluate(
            _numpy_embeddings(embed_arrays(model, test.images, test.tokens)),
            _numpy_embeddings(embed_arrays(model, prompt_images, data.prompts)).text,
            test,
        )
        if on_eval is not None:
            on_eval(step, metrics)
        return metrics

    with _threads(1):
        history = train(
            model,
            pool.images,
            pool.tokens,
            steps=config.steps,
            batch_size=config.batch_size,
            method=method,
            reference=reference,
            filter_ratio=config.filter_ratio,
            n_chunks=config.n_chunks,
            learning_rate=config.learning_rate,
            warmup_fraction=config.warmup_fraction,
            seed=seed,
            scoring_images=downsample(pool.images, spec.factor) if spec.factor != 1 else None,
            batches=lambda step: super_batch_indices(len(pool), config, seed, step),
            evaluate_every=config.eval_every,
            evaluate=evaluate_model,
        )
    return Curve.from_evaluations(history, time.perf_counter() - start)
