"""A minimal SigLIP (or CLIP) dual-encoder trainer in PyTorch, with JEST data selection.

Two layers:

* **General** (your arrays, your models): :class:`DualEncoder` wraps any image encoder and text
  encoder (``nn.Module`` s that return embeddings) with L2 normalization and SigLIP's learnable
  temperature and bias (or, with ``loss="softmax"``, CLIP's: a learnable temperature, no bias);
  :func:`siglip_loss` and :func:`clip_loss` are the losses; :func:`train` trains a dual encoder on
  image/token arrays with uniform sampling or a selection method (the spec's streaming joint
  selection or independent selection, through :func:`jestcore.adapters.torch.select_batch` on
  accelerators), reference embeddings from arrays or an
  :class:`~jestcore.adapters.torch.EmbeddingCache`, Adam with warm-up and cosine decay, and an
  evaluation callback; :func:`embed_arrays` embeds arrays in batches without gradients.
* **Shared recipe**: the methods, super-batch sizes and draws and the learning-rate schedule
  are :mod:`jestcore.adapters.recipe`'s (the JAX trainer and the demo use the same); the
  schedule runs as a ``torch.optim.lr_scheduler.LambdaLR`` (:func:`learning_rate_scheduler`).

The demo application drives this trainer through :mod:`jestcore.adapters.demo.torch_backend`;
nothing here imports the demo.

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

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jestcore.adapters import recipe
from jestcore.adapters.torch.cache import EmbeddingCache
from jestcore.adapters.torch.selection import select_batch
from torch import nn

import jestcore
from jestcore import _validation as v
from jestcore.streaming import check_loss

__all__ = [
    "BagOfWords",
    "DualEncoder",
    "ImageMLP",
    "embed_arrays",
    "clip_loss",
    "learning_rate_scheduler",
    "siglip_loss",
    "train",
]


class ImageMLP(nn.Module):
    """An MLP image encoder on flattened square images that also takes pooled images.

    ``pixels -> hidden -> dim`` with a ReLU. Given images average-pooled by a factor ``k``
    (:func:`jestcore.adapters.recipe.downsample`, ``pixels / k**2`` values), the first layer
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
        vocab_size: Number of token ids (default 36, the demo's vocabulary).
        dim: Embedding width.
    """

    def __init__(self, vocab_size: int = 36, dim: int = 32):
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
    With ``loss="softmax"`` it is a CLIP model: the temperature is learnable and the bias is a
    constant 0 (a buffer, not a parameter: a softmax has no use for it).

    Args:
        image_encoder: Maps an image batch to ``(n, d)`` embeddings.
        text_encoder: Maps a token batch to ``(n, d)`` embeddings (same ``d``).
        init_log_scale: Initial log temperature (``log 10`` for both losses; CLIP itself
            starts at ``log(1 / 0.07)``).
        init_bias: Initial bias (SigLIP: ``-10``); unused with ``loss="softmax"``.
        loss: ``"sigmoid"`` (SigLIP: a learnable bias) or ``"softmax"`` (CLIP: no bias).
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
        loss: str = "sigmoid",
        generator: int | None = None,
    ):
        super().__init__()
        self.loss = check_loss(loss)
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.log_scale = nn.Parameter(torch.tensor(float(init_log_scale)))
        self.bias: torch.Tensor
        if loss == "sigmoid":
            self.bias = nn.Parameter(torch.tensor(float(init_bias)))
        else:
            self.register_buffer("bias", torch.zeros(()))
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


def clip_loss(model_output: jestcore.PairEmbeddings) -> torch.Tensor:
    """CLIP's loss of a batch: the symmetric cross-entropy (InfoNCE in both directions).

    With logits ``L = scale * image @ text.T`` (the bias is ignored: it cancels in a softmax),
    ``(CE(L, labels) + CE(L.T, labels)) / 2``, each the mean over the ``n`` pairs of
    ``-log softmax`` of the matching pair (``labels = 0..n-1``).

    Args:
        model_output: ``(image, text, scale, bias)`` of ``n`` pairs.

    Returns:
        A 0-d tensor.
    """
    image, text, scale, _ = model_output
    logits = scale * image @ text.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


#: The training loss of each contrastive loss.
LOSS_FUNCTIONS: dict[str, Callable[[jestcore.PairEmbeddings], torch.Tensor]] = {
    "sigmoid": siglip_loss,
    "softmax": clip_loss,
}


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


def _float(x: Any) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def learning_rate_scheduler(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """The trainer's schedule as a ``LambdaLR``: :func:`jestcore.adapters.recipe.learning_rate`.

    Step ``t`` (after ``t`` calls of ``scheduler.step()``) trains at ``lr *
    recipe.learning_rate(t, total_steps, peak=1, warmup_fraction=warmup_fraction)``, where
    ``lr`` is each parameter group's initial rate (the peak).

    Args:
        optimizer: The optimizer, its groups' ``lr`` set to the peak rate.
        total_steps: Steps of the run.
        warmup_fraction: Fraction of the steps of linear warm-up (at least one step).

    Returns:
        The scheduler; call ``step()`` after each ``optimizer.step()``.
    """
    total_steps = v.check_int("total_steps", total_steps, low=1)
    warmup_fraction = recipe.check_real("warmup_fraction", warmup_fraction, low=0.0, high=1.0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda t: recipe.learning_rate(t, total_steps, peak=1.0, warmup_fraction=warmup_fraction),
    )


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
    gain: float = 100.0,
    loss: str = "sigmoid",
    learning_rate: float = 1e-3,
    warmup_fraction: float = 0.05,
    seed: int = 0,
    scoring_images: Any = None,
    example_ids: Any = None,
    batches: Callable[[int], np.ndarray] | None = None,
    evaluate_every: int | None = None,
    evaluate: Callable[[nn.Module, int], Any] | None = None,
    adam_beta2: float | None = None,
) -> list[tuple[int, Any]]:
    """Trains a SigLIP (or CLIP) dual encoder on arrays, sampling uniformly or selecting with JEST.

    Every step draws a super-batch of ``N = round(b / (1 - f))`` rows
    (:func:`jestcore.adapters.recipe.super_batch_size`, :func:`jestcore.adapters.recipe.draw_rows`;
    uniform sampling trains on the first ``b``), scores it with the learner (in eval mode, no
    gradients) and/or the cached ``reference`` embeddings, selects ``b`` rows with
    :func:`jestcore.adapters.torch.select_batch` (the method's score and chunks, see
    :class:`jestcore.adapters.recipe.MethodSpec`) and takes one Adam step on their SigLIP loss,
    at the rate of :func:`learning_rate_scheduler` (linear warm-up, cosine decay to zero).
    Adam's betas are ``(0.9, adam_beta2)``, by default 0.95 when the method filters and 0.999
    otherwise (:func:`jestcore.adapters.recipe.adam_beta2`, the paper's Appendix A.2); selected
    rows are never re-weighted (A.3).

    With ``loss="softmax"`` the model trains CLIP-style on :func:`clip_loss` (symmetric
    cross-entropy, the learnable temperature, no bias; build the model with
    ``DualEncoder(..., loss="softmax")``) and every selection scores learner and reference under
    the same softmax loss (the paper's Algorithm 3): train the reference with it too.

    Flexi-JEST (``"flexi_jest"``, Algorithm 2 of the paper) scores with ``scoring_images``
    and co-trains that low resolution: of the ``b`` selected rows, ``[::2]`` train on
    ``images`` and ``[1::2]`` on ``scoring_images`` (:func:`jestcore.adapters.recipe.flexi_split`),
    and the loss is the mean of the two halves' losses.

    The scoring pass is not re-used for the selected rows' gradient: autograd would
    back-propagate through the whole super-batch (``N`` rows, the unselected with zero
    gradients), which costs more than a fresh forward of the ``b`` selected rows.
    The model is updated in place; the arrays stay where they are (e.g. CPU) and each step's
    rows are moved to the model's device.

    Args:
        model: A :class:`DualEncoder`, or any module whose ``forward(images, tokens)`` returns
            ``(image, text, scale, bias)`` with unit embeddings.
        images: ``(n, ...)`` training images (NumPy or torch, floating).
        tokens: ``(n, seq_len)`` token ids (NumPy or torch, integer).
        steps: Training steps.
        batch_size: ``b``, the rows trained on per step.
        method: One of :data:`jestcore.adapters.recipe.METHODS`.
        reference: The frozen reference's embeddings of all ``n`` rows, computed once: a
            :class:`jestcore.PairEmbeddings` (NumPy or torch), or an
            :class:`jestcore.adapters.torch.EmbeddingCache` (from
            :func:`jestcore.adapters.torch.precompute_reference_embeddings`) looked up by
            ``example_ids``. Needed by methods that use the reference.
        filter_ratio: ``f``, the fraction of each super-batch that is filtered out.
        n_chunks: Chunks of joint selection.
        gain: The score gain of the sampling (default 100.0, the paper's recipe; 1.0 is
            Algorithm 1 as printed); see :func:`jestcore.joint_select`.
        loss: ``"sigmoid"`` (SigLIP, :func:`siglip_loss`) or ``"softmax"`` (CLIP,
            :func:`clip_loss`): the training loss, and the loss that selection scores under.
        learning_rate: Peak learning rate.
        warmup_fraction: Fraction of ``steps`` of linear warm-up.
        seed: Seed of the super-batches (unless ``batches`` is given) and of the selection.
        scoring_images: The images the learner scores with (e.g. pooled, for Flexi scoring);
            ``None`` means ``images``. Needed (``None`` is refused) for ``flexi_jest``, which
            also trains half of each batch on them.
        example_ids: ``(n,)`` stable integer ids of the rows, to look them up in an
            :class:`~jestcore.adapters.torch.EmbeddingCache` ``reference``.
        batches: ``batches(step)`` gives the step's super-batch rows (``N`` distinct ints, in
            random order); default: a fresh uniform draw per step from ``seed``.
        evaluate_every: Call ``evaluate`` at step 0, every this many steps and after the last.
        evaluate: ``evaluate(model, step)``; its return values are collected.
        adam_beta2: Adam's ``beta2``; ``None`` means
            :func:`jestcore.adapters.recipe.adam_beta2` ``(method, filter_ratio)``: 0.95 when
            the method filters (``f > 0``), 0.999 otherwise.

    Returns:
        The list of ``(step, evaluate(model, step))``; empty without ``evaluate``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range, or a needed input is missing.
    """
    spec = recipe.method_spec(method)
    steps = v.check_int("steps", steps, low=1)
    batch_size = v.check_int("batch_size", batch_size, low=1)
    n_chunks = v.check_int("n_chunks", n_chunks, low=1)
    if spec.selection == "joint_streaming" and n_chunks > batch_size:
        raise ValueError(f"n_chunks must be at most batch_size = {batch_size}, got {n_chunks}")
    seed = v.check_int("seed", seed, low=0)
    gain = v.check_gain(gain)
    loss_of = LOSS_FUNCTIONS[check_loss(loss)]
    recipe.check_real("learning_rate", learning_rate, low=0.0)
    if spec.factor > 1 and batch_size < 2:
        raise ValueError(f"method {method!r} co-trains two halves: batch_size must be >= 2")
    beta2 = recipe.adam_beta2(method, filter_ratio)
    if adam_beta2 is not None:
        beta2 = recipe.check_real("adam_beta2", adam_beta2, low=0.0, high=1.0)
    if evaluate_every is not None:
        v.check_int("evaluate_every", evaluate_every, low=1)
    super_batch = recipe.super_batch_size(batch_size, filter_ratio)
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
        if n < super_batch:
            raise ValueError(
                f"images has {n} rows, fewer than the super-batch N = {super_batch} (give "
                "batches, or more rows)"
            )

        def batches(step: int) -> np.ndarray:
            return recipe.draw_rows(n, super_batch, seed=seed, step=step)

    device = next(iter(model.parameters())).device
    every = evaluate_every or steps
    checkpoints = set(recipe.eval_steps(steps, every)) if evaluate is not None else set()
    history: list[tuple[int, Any]] = []
    optimizer = torch.optim.Adam(
        model.parameters(), lr=learning_rate, betas=(recipe.ADAM_BETA1, beta2)
    )
    scheduler = learning_rate_scheduler(
        optimizer, total_steps=steps, warmup_fraction=warmup_fraction
    )
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
            sel = select_batch(
                torch.arange(rows.shape[0], device=device),
                learner_emb,
                reference_emb,
                batch_size=batch_size,
                n_chunks=spec.n_chunks(n_chunks),
                score=spec.score,
                loss=loss,
                gain=gain,
                seed=int(jestcore.fold_in(seed, step)),
            ).indices
            chosen = rows[sel.cpu()]
        if spec.factor > 1:
            full, low = recipe.flexi_split(batch_size)
            value = 0.5 * (
                loss_of(model(x[chosen[full]].to(device), t[chosen[full]].to(device)))
                + loss_of(model(score_x[chosen[low]].to(device), t[chosen[low]].to(device)))
            )
        else:
            value = loss_of(model(x[chosen].to(device), t[chosen].to(device)))
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        scheduler.step()
    return history
