"""The demo's trainer protocol (:class:`jestcore.adapters.demo.Trainer`) on the JAX trainer.

:func:`train_reference`, :func:`embed` and :func:`train_learner`, the JAX backend of
``jestcore demo --backend jax``, run the recipe of :mod:`jestcore.adapters.demo` with
:class:`jestcore.adapters.jax.trainer.SigLIPTrainer`, so that the JAX and PyTorch backends train
the same models on the same batches.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jestcore.adapters.demo import app as _demo
from jestcore.adapters.demo.app import DemoConfig
from jestcore.adapters.demo.digits import Digits
from jestcore.adapters.jax.trainer import (
    DualEncoder,
    SigLIPTrainer,
    TrainConfig,
    _block_rows,
    _embed_pairs_jit,
    _embed_texts_jit,
    mlp_dual_encoder,
)

from jestcore import PairEmbeddings

__all__ = ["Model", "demo_encoder", "embed", "train_config", "train_learner", "train_reference"]

_LEARNER_STREAM, _REFERENCE_STREAM = 0, 1


def demo_encoder(config: DemoConfig) -> DualEncoder:
    """The dual encoder of a demo config (:func:`mlp_dual_encoder` at its widths)."""
    return mlp_dual_encoder(hidden=config.image_hidden, embed_dim=config.embed_dim)


def train_config(config: DemoConfig, method: str, *, steps: int | None = None) -> TrainConfig:
    """The training configuration of ``method`` in a demo config.

    Args:
        config: The demo config.
        method: One of :data:`jestcore.adapters.demo.METHODS`.
        steps: Steps of the run (default ``config.steps``).

    Returns:
        The config.
    """
    return TrainConfig(
        steps=config.steps if steps is None else steps,
        method=method,
        batch_size=config.batch_size,
        filter_ratio=config.filter_ratio,
        n_chunks=config.n_chunks,
        gain=config.gain,
        loss=config.loss,
        learning_rate=config.learning_rate,
        warmup_fraction=config.warmup_fraction,
        init_log_scale=config.init_log_scale,
        init_bias=config.init_bias,
    )


class Model(NamedTuple):
    """A trained model: the encoder and its parameters (what :func:`embed` takes).

    Attributes:
        encoder: The :class:`DualEncoder`.
        params: ``{"encoder": ..., "log_scale": ..., "bias": ...}``.
    """

    encoder: DualEncoder
    params: Any


def _model_params(model: Model) -> tuple[DualEncoder, Any]:
    if not isinstance(model, Model):
        raise TypeError(
            f"model must be a jestcore.adapters.demo.jax_backend.Model, got {type(model).__name__}"
        )
    return model.encoder, model.params


def embed(
    model: Model, images: np.ndarray, tokens: np.ndarray, *, factor: int = 1
) -> PairEmbeddings:
    """A model's unit embeddings of pairs, as NumPy (the demo's ``Trainer.embed``).

    Args:
        model: A :class:`Model` (from :func:`train_reference`).
        images: float ``(n, 64)`` images, or ``(n, 64 / factor**2)`` already pooled.
        tokens: int ``(n, seq_len)`` token ids.
        factor: The pooling factor of ``images`` (1: full resolution).

    Returns:
        :class:`jestcore.PairEmbeddings` of NumPy float32 ``(n, d)`` arrays and Python float
        ``scale`` (``exp(t)``) and ``bias``.
    """
    encoder, params = _model_params(model)
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be an int >= 1, got {factor!r}")
    out = _embed_pairs_jit(
        encoder, params, jnp.asarray(images, jnp.float32), jnp.asarray(tokens, jnp.int32), factor
    )
    return PairEmbeddings(
        np.asarray(out.image, np.float32),
        np.asarray(out.text, np.float32),
        float(out.scale),
        float(out.bias),
    )


def _seed_key(seed: int, stream: int) -> int:
    """A parameter seed per purpose (reference, learner) derived from the run's seed."""
    return int(np.random.default_rng([seed, 100 + stream]).integers(0, 2**31))


def train_reference(
    data: Digits,
    config: DemoConfig,
    seed: int,
    *,
    on_step: Callable[[int], None] | None = None,
) -> Model:
    """Trains the demo's reference on ``data.curated`` (the demo's ``Trainer.train_reference``).

    ``config.reference_steps`` uniform steps on the rows of
    :func:`jestcore.adapters.demo.reference_batch_indices`, Adam at
    :func:`jestcore.adapters.demo.learning_rate`.

    Args:
        data: The digits data.
        config: The demo config.
        seed: The run's seed.
        on_step: Called with ``t + 1`` after every step ``t`` (in blocks: the loop is compiled).

    Returns:
        The trained :class:`Model`.
    """
    curated = data.curated
    trainer = SigLIPTrainer(
        demo_encoder(config), train_config(config, "uniform", steps=config.reference_steps)
    )
    width = min(config.batch_size, len(curated))
    trainer = dataclasses.replace(
        trainer, config=dataclasses.replace(trainer.config, batch_size=width)
    )
    state = trainer.init(seed, param_seed=_seed_key(seed, _REFERENCE_STREAM))
    arrays = trainer.prepare(curated.images, curated.tokens)
    block = min(config.reference_steps, 100)
    points = [*range(0, config.reference_steps, block), config.reference_steps]
    for a, b in itertools.pairwise(points):
        rows = _block_rows(
            lambda t: _demo.reference_batch_indices(len(curated), config, seed, t),
            a,
            b,
            block,
            width,
        )
        state, _ = trainer.run(state, arrays, None, rows, b - a)
        if on_step is not None:
            jax.block_until_ready(state.params)
            for t in range(a, b):
                on_step(t + 1)
    return Model(trainer.model, state.params)


def train_learner(
    data: Digits,
    reference: PairEmbeddings | None,
    method: str,
    config: DemoConfig,
    seed: int,
    *,
    on_eval: Callable[[int, _demo.Metrics], None] | None = None,
) -> _demo.Curve:
    """Trains a learner on ``data.pool`` with ``method`` (the demo's ``Trainer.train_learner``).

    Args:
        data: The digits data.
        reference: The reference's cached embeddings of the whole pool (NumPy), or ``None``
            for methods that do not use it.
        method: One of :data:`jestcore.adapters.demo.METHODS`.
        config: The demo config.
        seed: The run's seed.
        on_eval: Called with ``(step, metrics)`` after each evaluation.

    Returns:
        The :class:`jestcore.adapters.demo.Curve`.
    """
    t0 = time.perf_counter()
    trainer = SigLIPTrainer(demo_encoder(config), train_config(config, method))
    spec = trainer.config.spec
    pool = data.pool
    state = trainer.init(seed, param_seed=_seed_key(seed, _LEARNER_STREAM))
    arrays = trainer.prepare(pool.images, pool.tokens)
    ref = None
    if spec.uses_reference:
        if reference is None:
            raise ValueError(f"method {method!r} needs the reference's pool embeddings, got None")
        ref = PairEmbeddings(
            jnp.asarray(reference.image, jnp.float32),
            jnp.asarray(reference.text, jnp.float32),
            jnp.asarray(reference.scale, jnp.float32),
            jnp.asarray(reference.bias, jnp.float32),
        )
    test_images = jnp.asarray(data.test.images, jnp.float32)
    test_tokens = jnp.asarray(data.test.tokens, jnp.int32)
    prompts = jnp.asarray(data.prompts, jnp.int32)

    def evaluate(params: Any) -> _demo.Metrics:
        emb = _embed_pairs_jit(trainer.model, params, test_images, test_tokens, 1)
        prompt = _embed_texts_jit(trainer.model, params, prompts)
        test = PairEmbeddings(
            np.asarray(emb.image), np.asarray(emb.text), float(emb.scale), float(emb.bias)
        )
        return _demo.evaluate(test, np.asarray(prompt), data.test)

    width = trainer.config.rows_per_step
    evaluations = []
    points = _demo.eval_steps(config)
    block = config.eval_every
    for a, b in zip([0, *points[:-1]], points, strict=True):
        if b > a:
            rows = _block_rows(
                lambda t: _demo.super_batch_indices(len(pool), config, seed, t), a, b, block, width
            )
            state, _ = trainer.run(state, arrays, ref, rows, b - a)
        metrics = evaluate(state.params)
        evaluations.append((b, metrics))
        if on_eval is not None:
            on_eval(b, metrics)
    return _demo.Curve.from_evaluations(evaluations, seconds=time.perf_counter() - t0)
