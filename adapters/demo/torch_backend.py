"""The demo's trainer protocol (:class:`jestcore.adapters.demo.Trainer`) on the PyTorch trainer.

:func:`train_reference`, :func:`embed` and :func:`train_learner` run the recipe of
:mod:`jestcore.adapters.demo` with :func:`demo_model` (an image MLP whose first layer also takes
pooled images, for Flexi scoring, and a bag-of-words text encoder), training with
:func:`jestcore.adapters.torch.trainer.train`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from jestcore.adapters.demo.app import (
    Curve,
    DemoConfig,
    Metrics,
    evaluate,
    reference_batch_indices,
    super_batch_indices,
)
from jestcore.adapters.demo.digits import Digits
from jestcore.adapters.demo.text import VOCAB
from jestcore.adapters.recipe import downsample, method_spec
from jestcore.adapters.torch.trainer import (
    BagOfWords,
    DualEncoder,
    ImageMLP,
    embed_arrays,
    train,
)
from torch import nn

import jestcore

__all__ = ["demo_model", "embed", "train_learner", "train_reference"]


def demo_model(config: DemoConfig, seed: int) -> DualEncoder:
    """The demo's dual encoder (see :mod:`jestcore.adapters.demo`), initialized from ``seed``.

    Args:
        config: Widths, loss and initialization.
        seed: Initialization seed.

    Returns:
        A :class:`DualEncoder` of an :class:`ImageMLP` and a :class:`BagOfWords`.
    """
    return DualEncoder(
        ImageMLP(64, config.image_hidden, config.embed_dim),
        BagOfWords(len(VOCAB), config.embed_dim),
        init_log_scale=config.init_log_scale,
        init_bias=config.init_bias,
        loss=config.loss,
        generator=seed,
    )


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

    def report(_: nn.Module, step: int) -> None:
        if on_step is not None and step > 0:
            on_step(step)

    with _threads(1):
        train(
            model,
            curated.images,
            curated.tokens,
            steps=config.reference_steps,
            batch_size=min(config.batch_size, len(curated)),
            method="uniform",
            loss=config.loss,
            learning_rate=config.learning_rate,
            warmup_fraction=config.warmup_fraction,
            seed=seed,
            batches=lambda step: reference_batch_indices(len(curated), config, seed, step),
            evaluate_every=1,
            evaluate=report,
        )
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
    spec = method_spec(method)
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
            gain=config.gain,
            loss=config.loss,
            learning_rate=config.learning_rate,
            warmup_fraction=config.warmup_fraction,
            seed=seed,
            scoring_images=downsample(pool.images, spec.factor) if spec.factor != 1 else None,
            batches=lambda step: super_batch_indices(len(pool), config, seed, step),
            evaluate_every=config.eval_every,
            evaluate=evaluate_model,
        )
    return Curve.from_evaluations(history, time.perf_counter() - start)
