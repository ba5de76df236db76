"""The JEST demo, framework-neutral: methods, configuration, trainer protocol, runner and report.

``jestcore demo`` trains small SigLIP (or, with ``--loss softmax``, CLIP) dual encoders on the
embedded digits data
(:mod:`jestcore.adapters.demo.digits`): a *reference* on the clean curated split, then a
*learner* on the noisy web pool under each selection method, with the same learner steps,
sub-batch size ``b``, optimizer, learning-rate schedule and tuning for every method. It
evaluates on the clean test split (zero-shot accuracy against the ten class prompts,
image-to-text recall@1), accounts for compute with :mod:`jestcore.adapters.demo.costs` (scoring
included) and reports how many steps and FLOPs each method needs to reach uniform sampling's
final accuracy.

This module holds everything of the demo that does not depend on the framework, so that the
PyTorch and JAX backends follow one recipe and draw the same super-batches. What the reference
trainers share with it (the methods, the schedule, the draws) is :mod:`jestcore.adapters.recipe`:

* :data:`METHODS` / :data:`METHOD_SPECS`: the recipe's methods (re-exported);
* :class:`DemoConfig`: every knob of a run (data, models, optimization, selection, evaluation);
* the **trainer protocol** (:class:`Trainer`): three functions that a backend module
  (:mod:`jestcore.adapters.demo.torch_backend`, :mod:`jestcore.adapters.demo.jax_backend`)
  provides;
* the shared recipe that trainers call: :func:`super_batch_indices`,
  :func:`reference_batch_indices`, :func:`learning_rate`, :func:`eval_steps`,
  :func:`selection_seed`, :func:`select_sub_batch`, :func:`evaluate`;
* the compute model: :func:`model_flops`, :func:`method_step_flops`;
* the runner and the report: :func:`run_demo`, :func:`summarize`, :func:`format_table`,
  :func:`plot_curves`.

The trainer protocol
--------------------
A backend is a module with these functions (all arrays crossing the boundary are NumPy):

``train_reference(data, config, seed, *, on_step=None) -> model``
    Initializes a dual encoder (the architecture below) from ``seed`` and
    trains it for ``config.reference_steps`` steps on ``data.curated``: step ``t`` trains on
    ``data.curated`` rows :func:`reference_batch_indices` ``(len(data.curated), config, seed,
    t)`` with Adam at :func:`learning_rate` ``(t, config.reference_steps, config)``. Calls
    ``on_step(t + 1)`` after each step if given. Returns the trained model (any object that
    ``embed`` accepts).

``embed(model, images, tokens, *, factor=1) -> PairEmbeddings``
    The model's L2-normalized embeddings of ``images`` (float32 ``(n, 64)``, or ``(n, 64 /
    factor**2)`` already pooled with :func:`jestcore.adapters.recipe.downsample` when
    ``factor > 1``) and ``tokens`` (int ``(n, seq_len)``), as a :class:`jestcore.PairEmbeddings`
    of NumPy float32 ``(n, d)`` arrays and Python floats ``scale`` (already exponentiated) and
    ``bias``. No gradients, no state change.

``train_learner(data, reference, method, config, seed, *, on_eval=None) -> Curve``
    Initializes the learner from ``seed`` (the same initialization for every method at one
    seed) and trains it for ``config.steps`` steps on ``data.pool``. At step ``t``:

    1. ``idx = super_batch_indices(len(data.pool), config, seed, t)``: ``N`` distinct pool rows
       (``N = config.super_batch``).
    2. ``method == "uniform"``: train on ``idx[:b]`` (a uniform sample of ``b``). Otherwise
       score the super-batch with the learner (at resolution ``METHOD_SPECS[method].factor``)
       and/or the cached ``reference`` (a ``PairEmbeddings`` of the whole pool, NumPy, row ``i``
       = pool row ``i``; ``None`` for methods that do not use it) and select ``sel =
       select_sub_batch(method, learner_emb, reference[idx], config, selection_seed(seed, t))``
       (or any selection that returns the same indices, e.g. a jitted one); train on
       ``idx[sel]``.
    3. One Adam step on the training loss (``config.loss``) of those ``b`` pairs at learning rate
       ``learning_rate(t, config.steps, config)``. Flexi-JEST (``factor > 1``) co-trains the
       low resolution: positions ``[::2]`` of ``sel`` train at full resolution and ``[1::2]``
       on the pooled images (:func:`jestcore.adapters.recipe.flexi_split`), the loss being the
       mean of the two halves' losses (Algorithm 2 of the paper).

    After every step count ``s`` in :func:`eval_steps` (``0`` means before training), embed
    ``data.test`` and ``data.prompts`` and compute ``metrics = evaluate(test_emb,
    prompt_emb, data.test)``; call ``on_eval(s, metrics)`` if given. Returns the
    :class:`Curve` of those evaluations.

Runs are independent: :func:`run_demo` may call these functions in spawned worker processes
(``workers > 1``), one ``(seed, method)`` per call, so a run must depend only on its arguments
(no global state carried between runs) and return picklable values (NumPy arrays, floats).

The architecture and loss (both backends)
-----------------------------------------
* Image encoder: an MLP ``64 -> config.image_hidden -> config.embed_dim`` with a ReLU, then
  L2 normalization. At scoring factor ``k > 1`` (Flexi) it takes ``downsample(images, k)``
  (``64 / k**2`` pixels, block means) and uses first-layer weights **summed over each k x k
  block**: exactly the full-resolution layer applied to the nearest-neighbour upsampled image,
  at ``1 / k**2`` of that layer's FLOPs, with shared weights (the FlexiViT idea for an MLP).
* Text encoder: bag of words, ``sum of a (vocab, embed_dim) embedding over the non-padding
  tokens`` (token id 0 is padding), then L2 normalization.
* Loss: SigLIP, ``-(1/b) * sum_ij log sigmoid(z_ij * (exp(t) * <image_i, text_j> + bias))``
  with ``z_ij = +1`` on the diagonal and ``-1`` elsewhere; learnable ``t`` (init
  ``config.init_log_scale``) and ``bias`` (init ``config.init_bias``). With
  ``config.loss = "softmax"``: CLIP's symmetric cross-entropy (InfoNCE in both directions) of
  the logits ``exp(t) * <image_i, text_j>``, learnable ``t``, no bias (0); every selection
  (learner and reference, which trains with the same loss) then scores under the softmax loss,
  the paper's Algorithm 3.
* Optimizer: Adam (``config.learning_rate``, betas 0.9 / ``beta2``, eps 1e-8, no weight decay)
  with linear warm-up and cosine decay to zero (:func:`learning_rate`). ``beta2`` is
  :func:`jestcore.adapters.recipe.adam_beta2`: 0.95 for the methods that filter (the paper's
  Appendix A.2), 0.999 for uniform sampling and the reference. Selected pairs are never
  re-weighted (A.3).
* Initialization: the framework's standard dense initialization (PyTorch ``nn.Linear``
  default: uniform in ``+-1/sqrt(fan_in)``; embeddings ``N(0, 1)``), seeded by ``seed``.

Compute model
-------------
FLOPs per example of a forward pass are :func:`jestcore.adapters.demo.costs.mlp_flops` of the image
MLP plus ``mlp_flops([vocab, embed_dim])`` for the bag-of-words text encoder; a learner step
costs :func:`jestcore.adapters.demo.costs.step_flops` in the paper's convention
(:data:`jestcore.adapters.demo.costs.CONVENTION`: scoring at the method's resolution, selection
arithmetic, training ``2 b F`` when the scoring forward of the selected pairs is re-used, ``3 b
F`` for uniform, Flexi co-training half at each resolution), see :func:`method_step_flops`.
The trainers themselves recompute the selected pairs' forward pass, which is faster in wall
clock at this scale (autograd through the scoring pass back-propagates all ``N`` rows).
Reference embeddings of the pool are computed once per seed and cached: that pass
(``pool_size * F_ref``) is charged as a one-time offset to every method that uses the
reference. Training the reference is reported separately (it is reusable across runs).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from jestcore.adapters import recipe
from jestcore.adapters.demo import costs
from jestcore.adapters.demo.digits import IMAGE_SIDE, Digits, DigitsConfig, Split, make_digits
from jestcore.adapters.demo.text import VOCAB
from jestcore.adapters.recipe import METHOD_SPECS, METHODS, MethodSpec, check_real

import jestcore
from jestcore import _validation as v
from jestcore.streaming import check_loss

__all__ = [
    "BACKENDS",
    "METHODS",
    "METHOD_SPECS",
    "Curve",
    "DemoConfig",
    "MethodSpec",
    "Metrics",
    "Trainer",
    "default_workers",
    "eval_steps",
    "evaluate",
    "format_table",
    "learning_rate",
    "load_backend",
    "method_step_flops",
    "model_flops",
    "plot_curves",
    "recipe_record",
    "reference_batch_indices",
    "run_demo",
    "select_sub_batch",
    "selection_seed",
    "summarize",
    "super_batch_indices",
]

#: The trainer backends, by the name ``--backend`` takes, and the module that implements them.
BACKENDS: dict[str, str] = {
    "torch": "jestcore.adapters.demo.torch_backend",
    "jax": "jestcore.adapters.demo.jax_backend",
}


@dataclass(frozen=True)
class DemoConfig:
    """Every knob of a demo run; validated on construction. The same for every method.

    Attributes:
        steps: Learner steps per method and seed.
        seeds: Number of seeds (``0 .. seeds - 1``); each seed has its own reference, learner
            initialization, super-batches and selection noise, shared by all methods.
        methods: Which of :data:`METHODS` to run; ``"uniform"`` must be among them (it sets the
            target).
        batch_size: ``b``, the sub-batch trained on per step.
        filter_ratio: ``f``; the super-batch has ``N = round(b / (1 - f))`` pairs.
        n_chunks: Chunks of joint selection.
        gain: The score gain of every selection (default 100.0, the paper's recipe; 1.0 is
            Algorithm 1 as printed); see :func:`jestcore.joint_select`.
        loss: ``"sigmoid"`` (SigLIP, the default) or ``"softmax"`` (CLIP: symmetric
            cross-entropy, learnable temperature, no bias): the loss that the reference and
            the learners train on and that every selection scores under.
        learning_rate: Peak Adam learning rate (learner and reference).
        warmup_fraction: Fraction of the steps of linear warm-up (at least one step).
        image_hidden: Hidden width of the image MLP.
        embed_dim: Embedding width of both encoders.
        init_log_scale: Initial log of the temperature (either loss).
        init_bias: Initial SigLIP bias (unused with ``loss="softmax"``).
        reference_steps: Steps of reference training on the curated split (batch ``b``).
        eval_every: Evaluate every this many learner steps (and at step 0 and the last step).
        smoothing_window: Window of :func:`jestcore.adapters.demo.costs.smooth` for final values
            and steps-to-target (odd).
        data: The :class:`jestcore.adapters.demo.digits.DigitsConfig` of the data. The demo's
            default adds 8 augmented copies (the pool's shifts and pixel noise) of every curated
            image, which lifts the reference from about 0.79 to 0.92 zero-shot accuracy; the
            learner's pool is :class:`~jestcore.adapters.demo.digits.DigitsConfig`'s default (70%
            corrupted).
    """

    steps: int = 1500
    seeds: int = 3
    methods: tuple[str, ...] = METHODS
    batch_size: int = 64
    filter_ratio: float = 0.8
    n_chunks: int = 16
    gain: float = 100.0
    loss: str = "sigmoid"
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.05
    image_hidden: int = 512
    embed_dim: int = 32
    init_log_scale: float = math.log(10.0)
    init_bias: float = -10.0
    reference_steps: int = 800
    eval_every: int = 50
    smoothing_window: int = 5
    data: DigitsConfig = field(default_factory=lambda: DigitsConfig(curated_augmentations=8))

    def __post_init__(self) -> None:
        v.check_int("steps", self.steps, low=1)
        v.check_int("seeds", self.seeds, low=1)
        if not isinstance(self.methods, tuple) or not self.methods:
            raise TypeError(f"methods must be a non-empty tuple of names, got {self.methods!r}")
        for m in self.methods:
            if m not in METHOD_SPECS:
                raise ValueError(f"methods: unknown method {m!r}; expected some of {METHODS}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must not repeat, got {self.methods}")
        if "uniform" not in self.methods:
            raise ValueError("methods must include 'uniform' (its final accuracy is the target)")
        v.check_int("batch_size", self.batch_size, low=1)
        v.check_ratio("filter_ratio", self.filter_ratio)
        v.check_int("n_chunks", self.n_chunks, low=1)
        if self.n_chunks > self.batch_size:
            raise ValueError(
                f"n_chunks must be at most batch_size = {self.batch_size}, got {self.n_chunks}"
            )
        v.check_gain(self.gain)
        check_loss(self.loss)
        check_real("learning_rate", self.learning_rate, low=0.0)
        check_real("warmup_fraction", self.warmup_fraction, low=0.0, high=1.0)
        v.check_int("image_hidden", self.image_hidden, low=1)
        v.check_int("embed_dim", self.embed_dim, low=1)
        check_real("init_log_scale", self.init_log_scale)
        check_real("init_bias", self.init_bias)
        v.check_int("reference_steps", self.reference_steps, low=1)
        v.check_int("eval_every", self.eval_every, low=1)
        v.check_int("smoothing_window", self.smoothing_window, low=1)
        if self.smoothing_window % 2 == 0:
            raise ValueError(f"smoothing_window must be odd, got {self.smoothing_window}")
        if not isinstance(self.data, DigitsConfig):
            raise TypeError(f"data must be a DigitsConfig, got {type(self.data).__name__}")

    @property
    def super_batch(self) -> int:
        """``N = round(b / (1 - f))``, the super-batch size."""
        return recipe.super_batch_size(self.batch_size, self.filter_ratio)

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """A small configuration for tests and smoke runs (well under a minute on 2 cores).

        Args:
            **overrides: Fields to change from the quick defaults.

        Returns:
            The config.
        """
        base: dict[str, Any] = {
            "steps": 300,
            "seeds": 2,
            "methods": ("uniform", "jest"),
            "reference_steps": 300,
            "eval_every": 25,
            "image_hidden": 256,
            "smoothing_window": 3,
        }
        base.update(overrides)
        return cls(**base)

    def as_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass(frozen=True)
class Metrics:
    """Evaluation of a model on the test split.

    Attributes:
        zero_shot: Zero-shot accuracy: the fraction of test images whose nearest class prompt
            (by cosine similarity) names their class.
        recall_at_1: Image-to-text recall@1: the fraction of test images whose nearest test
            caption names their class (captions are class-level templates, so any caption of
            the right class is a correct match; identical captions are indistinguishable).
    """

    zero_shot: float
    recall_at_1: float


@dataclass(frozen=True)
class Curve:
    """A learner's evaluations during training.

    Attributes:
        steps: int64 ``(k,)`` learner steps at which it was evaluated (:func:`eval_steps`).
        zero_shot: float64 ``(k,)`` zero-shot accuracy at those steps.
        recall_at_1: float64 ``(k,)`` image-to-text recall@1 at those steps.
        seconds: Wall-clock seconds of the run (training, scoring and evaluation).
    """

    steps: np.ndarray
    zero_shot: np.ndarray
    recall_at_1: np.ndarray
    seconds: float = 0.0

    @classmethod
    def from_evaluations(
        cls, evaluations: Sequence[tuple[int, Metrics]], seconds: float = 0.0
    ) -> Curve:
        """Builds a curve from ``(step, metrics)`` pairs in step order.

        Args:
            evaluations: The pairs.
            seconds: Wall-clock seconds of the run.

        Returns:
            The curve.
        """
        return cls(
            steps=np.asarray([s for s, _ in evaluations], dtype=np.int64),
            zero_shot=np.asarray([m.zero_shot for _, m in evaluations], dtype=np.float64),
            recall_at_1=np.asarray([m.recall_at_1 for _, m in evaluations], dtype=np.float64),
            seconds=float(seconds),
        )


class Trainer(Protocol):
    """The functions a backend module provides (see the module docstring for the contract)."""

    def train_reference(
        self,
        data: Digits,
        config: DemoConfig,
        seed: int,
        *,
        on_step: Callable[[int], None] | None = None,
    ) -> Any:
        """Trains the reference model on ``data.curated``; returns it."""
        ...

    def embed(
        self, model: Any, images: np.ndarray, tokens: np.ndarray, *, factor: int = 1
    ) -> jestcore.PairEmbeddings:
        """NumPy float32 unit embeddings plus float scale and bias."""
        ...

    def train_learner(
        self,
        data: Digits,
        reference: jestcore.PairEmbeddings | None,
        method: str,
        config: DemoConfig,
        seed: int,
        *,
        on_eval: Callable[[int, Metrics], None] | None = None,
    ) -> Curve:
        """Trains a learner on ``data.pool`` with ``method``; returns its curve."""
        ...


def load_backend(name: str) -> Trainer:
    """The trainer module of backend ``name`` (``"torch"`` or ``"jax"``).

    Args:
        name: A key of :data:`BACKENDS`.

    Returns:
        The module (it follows :class:`Trainer`).

    Raises:
        ValueError: If ``name`` is unknown.
        ImportError: If the backend's trainer or its framework is not installed.
    """
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {name!r}")
    try:
        module = importlib.import_module(BACKENDS[name])
    except ImportError as error:
        raise ImportError(
            f"the {name} trainer ({BACKENDS[name]}) is not available: {error}. Install the "
            f"framework (pip install 'jestcore[{name}]') or choose another --backend."
        ) from error
    missing = [f for f in ("train_reference", "embed", "train_learner") if not hasattr(module, f)]
    if missing:
        raise ImportError(f"{BACKENDS[name]} does not provide {missing} (see Trainer)")
    return module


# --------------------------------------------------------------------------------------------
# The shared recipe: batches, schedule, selection, evaluation.

_POOL_STREAM, _CURATED_STREAM = 1, 2


def super_batch_indices(pool_size: int, config: DemoConfig, seed: int, step: int) -> np.ndarray:
    """The ``N`` distinct pool rows of learner step ``step`` (a uniform sample, in random order).

    :func:`jestcore.adapters.recipe.draw_rows` (stream 1): the same for every method and
    backend at one ``(seed, step)``; uniform sampling trains on the first ``b``, which are a
    uniform sample of ``b`` rows.

    Args:
        pool_size: Rows in the pool (at least ``N``).
        config: The demo config (``N = config.super_batch``).
        seed: The run's seed.
        step: The learner step.

    Returns:
        int64 ``(N,)`` indices into the pool.

    Raises:
        ValueError: If the pool has fewer than ``N`` rows.
    """
    n = config.super_batch
    if pool_size < n:
        raise ValueError(f"the pool has {pool_size} rows, fewer than the super-batch N = {n}")
    return recipe.draw_rows(pool_size, n, seed=seed, step=step, stream=_POOL_STREAM)


def reference_batch_indices(size: int, config: DemoConfig, seed: int, step: int) -> np.ndarray:
    """The curated rows of reference-training step ``step``: ``min(b, size)`` distinct rows.

    Args:
        size: Rows in the curated split.
        config: The demo config (``b = config.batch_size``).
        seed: The run's seed.
        step: The reference step.

    Returns:
        int64 indices into the curated split.
    """
    b = min(config.batch_size, size)
    return recipe.draw_rows(size, b, seed=seed, step=step, stream=_CURATED_STREAM)


def learning_rate(step: int, total_steps: int, config: DemoConfig) -> float:
    """The learning rate of step ``step`` of ``total_steps`` in a demo config.

    :func:`jestcore.adapters.recipe.learning_rate` with ``peak = config.learning_rate`` and
    ``config.warmup_fraction``: linear warm-up, then cosine decay to 0.

    Example:
        >>> c = DemoConfig(learning_rate=1.0, warmup_fraction=0.1)
        >>> [round(learning_rate(s, 10, c), 3) for s in (0, 1, 5, 9)]
        [1.0, 1.0, 0.587, 0.03]
    """
    return recipe.learning_rate(
        step, total_steps, peak=config.learning_rate, warmup_fraction=config.warmup_fraction
    )


def eval_steps(config: DemoConfig) -> list[int]:
    """The learner step counts after which to evaluate: 0, every ``eval_every``, and the last.

    Example:
        >>> eval_steps(DemoConfig(steps=120, eval_every=50))
        [0, 50, 100, 120]
    """
    return recipe.eval_steps(config.steps, config.eval_every)


def selection_seed(seed: int, step: int) -> int:
    """The seed of the selection noise at learner step ``step`` (:func:`jestcore.fold_in`)."""
    return int(jestcore.fold_in(int(seed), int(step)))


def select_sub_batch(
    method: str,
    learner: jestcore.PairEmbeddings | None,
    reference: jestcore.PairEmbeddings | None,
    config: DemoConfig,
    seed: int,
) -> Any:
    """The ``b`` super-batch positions that ``method`` trains on, from the models' embeddings.

    Works on the arrays of any array-API namespace (NumPy, PyTorch, JAX); returns indices of
    the same namespace. ``uniform`` is ``arange(b)`` (the super-batch is already in random
    order). Every other method is one call of :func:`jestcore.joint_select_embeddings` with the
    method's score and :meth:`~jestcore.adapters.recipe.MethodSpec.n_chunks` (one chunk, the
    diagonal of the score matrix, for ``independent``): what the trainers' adapters compute.

    Args:
        method: One of :data:`METHODS`.
        learner: The learner's embeddings of the super-batch, or ``None`` if the method does
            not use it.
        reference: The reference's embeddings of the super-batch, or ``None``.
        config: The demo config (``b``, ``n_chunks``, ``gain``, ``loss``).
        seed: The selection seed (:func:`selection_seed`).

    Returns:
        A 1-D integer array of ``b`` positions in ``[0, N)``.

    Raises:
        ValueError: If ``method`` is unknown or a model it needs is ``None``.
    """
    spec = recipe.method_spec(method)
    b = config.batch_size
    for name, needed, model in (
        ("learner", spec.uses_learner, learner),
        ("reference", spec.uses_reference, reference),
    ):
        if needed and model is None:
            raise ValueError(f"method {method!r} needs {name} embeddings, got None")
    if spec.score is None:
        import array_api_compat

        arrays = [m.image for m in (learner, reference) if m is not None]
        if arrays:
            xp = array_api_compat.array_namespace(*arrays)
            return xp.arange(b, device=array_api_compat.device(arrays[0]))
        return np.arange(b, dtype=np.int64)
    return jestcore.joint_select_embeddings(
        learner if spec.uses_learner else None,
        reference if spec.uses_reference else None,
        b,
        n_chunks=spec.n_chunks(config.n_chunks),
        score=spec.score,
        loss=config.loss,
        gain=config.gain,
        seed=seed,
    )


def evaluate(test: jestcore.PairEmbeddings, prompts: np.ndarray, split: Split) -> Metrics:
    """Zero-shot accuracy and image-to-text recall@1 from NumPy embeddings.

    Args:
        test: Embeddings of ``split`` (``image`` and ``text`` ``(n, d)``, unit norm).
        prompts: ``(10, d)`` text embeddings of the class prompts (row ``k`` names class ``k``).
        split: The evaluated split (its ``labels`` and ``caption_labels``).

    Returns:
        The :class:`Metrics`. Ties go to the lower index.

    Raises:
        ValueError: If the shapes do not match.
    """
    image, text = np.asarray(test.image), np.asarray(test.text)
    prompts = np.asarray(prompts)
    if image.shape != text.shape or image.shape[0] != len(split):
        raise ValueError(
            f"test embeddings must be (n, d) with n = {len(split)}, got {image.shape} and "
            f"{text.shape}"
        )
    if prompts.ndim != 2 or prompts.shape != (10, image.shape[1]):
        raise ValueError(f"prompts must be (10, {image.shape[1]}), got {prompts.shape}")
    zero_shot = float(np.mean(np.argmax(image @ prompts.T, axis=1) == split.labels))
    nearest = np.argmax(image @ text.T, axis=1)
    recall = float(np.mean(split.caption_labels[nearest] == split.labels))
    return Metrics(zero_shot=zero_shot, recall_at_1=recall)


# --------------------------------------------------------------------------------------------
# Compute model.


def model_flops(config: DemoConfig, factor: int = 1) -> float:
    """Forward FLOPs per image-caption pair of the demo's dual encoder.

    ``mlp_flops([64 / factor**2, image_hidden, embed_dim]) + mlp_flops([vocab, embed_dim])``
    (the bag-of-words text encoder counted as a dense layer on word counts).

    Args:
        config: The demo config.
        factor: The image pooling factor (1: full 8x8 resolution; 2: 4x4).

    Returns:
        The FLOPs.

    Example:
        >>> model_flops(DemoConfig()), model_flops(DemoConfig(), 2)
        (100480.0, 51328.0)
    """
    pixels = (IMAGE_SIDE // factor) ** 2
    image = costs.mlp_flops([pixels, config.image_hidden, config.embed_dim])
    text = costs.mlp_flops([len(VOCAB), config.embed_dim])
    return float(image + text)


def method_step_flops(method: str, config: DemoConfig) -> costs.StepFlops:
    """FLOPs of one learner step of ``method`` (:func:`jestcore.adapters.demo.costs.step_flops`).

    The learner scores at the method's factor, the reference is cached, selection arithmetic
    is counted; training re-uses the scoring forward when the learner scores at full
    resolution (``2 * b * F``), Flexi-JEST trains half of ``b`` at each resolution
    (:attr:`~jestcore.adapters.recipe.MethodSpec.co_training`), uniform costs ``3 * b * F``.

    Args:
        method: One of :data:`METHODS`.
        config: The demo config.

    Returns:
        The :class:`jestcore.adapters.demo.costs.StepFlops`.
    """
    spec = METHOD_SPECS[method]
    return costs.step_flops(
        batch_size=config.batch_size,
        train_flops=model_flops(config),
        filter_ratio=config.filter_ratio,
        score=spec.score,
        selection=spec.selection or "joint_streaming",
        score_flops=model_flops(config, spec.factor),
        reference_flops=model_flops(config),
        reference_cached=True,
        embed_dim=config.embed_dim,
        n_chunks=config.n_chunks,
        co_training=spec.co_training,
    )


#: How ``results.json`` describes each loss (``config.recipe.loss``).
_LOSS_RECORD = {
    "sigmoid": "sigmoid (SigLIP): learnable temperature and bias; selection under the "
    "pairwise sigmoid loss (Algorithm 1)",
    "softmax": "softmax (CLIP): symmetric cross-entropy, learnable temperature, no bias; "
    "selection under the softmax loss (Algorithm 3) for learner and reference",
}


def recipe_record(config: DemoConfig) -> dict[str, Any]:
    """What ``results.json`` records of the recipe (under ``config["recipe"]``).

    Args:
        config: The demo config.

    Returns:
        ``{"loss": the training and selection loss, "costs": the FLOP convention,
        "adam_beta2": {method: beta2}, "flexi_split": ..., "reweighting": False}``.

    Example:
        >>> recipe_record(DemoConfig.quick())["adam_beta2"]
        {'uniform': 0.999, 'jest': 0.95}
    """
    return {
        "loss": _LOSS_RECORD[config.loss],
        "costs": costs.CONVENTION,
        "adam_beta2": {m: recipe.adam_beta2(m, config.filter_ratio) for m in config.methods},
        "flexi_split": "selected[::2] at full resolution, selected[1::2] at the scoring "
        "resolution; loss = mean of the two halves' losses",
        "reweighting": False,
    }


# --------------------------------------------------------------------------------------------
# The runner.


class _LineBar:
    """A progress "bar" for logs: one line per tenth of the work, no carriage returns."""

    def __init__(self, total: int, desc: str, stream: Any) -> None:
        self.total, self.desc, self.stream = max(1, total), desc, stream
        self.n, self.postfix, self._tenths = 0, "", 0

    def __enter__(self) -> _LineBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, k: int = 1) -> None:
        self.n += k
        tenths = min(10, self.n * 10 // self.total)
        if tenths > self._tenths:
            self._tenths = tenths
            self._line()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def _line(self) -> None:
        tail = f" ({self.postfix})" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total}{tail}", file=self.stream, flush=True)


def _bar(total: int, desc: str, enabled: bool, position: int | None = None) -> Any:
    """A tqdm bar on stderr when it is a terminal; plain lines otherwise (CI logs)."""
    import sys

    stream = sys.stderr
    if enabled and not stream.isatty():
        return _LineBar(total, desc, stream)
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        disable=not enabled,
        leave=position == 0,
        position=position,
        dynamic_ncols=True,
    )


def _reference_task(
    trainer: Trainer, data: Digits, config: DemoConfig, seed: int, on_step: Any = None
) -> tuple[jestcore.PairEmbeddings, Metrics]:
    """Trains seed ``seed``'s reference; returns its pool embeddings (the cache) and metrics."""
    reference = trainer.train_reference(data, config, seed, on_step=on_step)
    cached = trainer.embed(reference, data.pool.images, data.pool.tokens)
    prompt_images = data.test.images[: data.prompts.shape[0]]  # the prompts' text is what counts
    metrics = evaluate(
        trainer.embed(reference, data.test.images, data.test.tokens),
        trainer.embed(reference, prompt_images, data.prompts).text,
        data.test,
    )
    return cached, metrics


# Worker processes: the backend and the data are loaded once per worker.
_WORKER: dict[str, Any] = {}


def _worker_init(backend: str, data: DigitsConfig, queue: Any) -> None:
    _WORKER.update(trainer=importlib.import_module(backend), data=make_digits(data), queue=queue)


def _worker_reference(config: DemoConfig, seed: int) -> tuple[jestcore.PairEmbeddings, Metrics]:
    queue, key = _WORKER["queue"], ("reference", seed)
    every = max(1, config.reference_steps // 20)

    def on_step(t: int) -> None:
        if t % every == 0 or t == config.reference_steps:
            queue.put((key, t, None))

    return _reference_task(_WORKER["trainer"], _WORKER["data"], config, seed, on_step)


def _worker_learner(
    config: DemoConfig, seed: int, method: str, cached: jestcore.PairEmbeddings | None
) -> Curve:
    queue, key = _WORKER["queue"], (method, seed)

    def on_eval(step: int, metrics: Metrics) -> None:
        queue.put((key, step, metrics.zero_shot))

    return _WORKER["trainer"].train_learner(
        _WORKER["data"], cached, method, config, seed, on_eval=on_eval
    )


def default_workers() -> int:
    """The CPUs this process may use (each worker trains with one thread)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_demo(
    config: DemoConfig | None = None,
    *,
    backend: str | Trainer = "torch",
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """Runs every method of ``config`` for every seed and returns (and writes) the results.

    For each seed: trains the reference on the curated split and embeds the pool once with it
    (the cache); then trains one learner per method. Then :func:`summarize`. Every run is
    deterministic given its seed and method, so the results do not depend on ``workers``.

    Args:
        config: The demo config (default :class:`DemoConfig`).
        backend: ``"torch"``, ``"jax"``, or a module following :class:`Trainer`.
        out: Folder to write ``results.json`` and ``curves.png`` to (created), or ``None``.
        progress: Show progress on stderr: tqdm bars on a terminal, else one plain line per
            tenth of each run (no carriage returns in CI logs).
        workers: Processes that train in parallel (at most the number of runs are used);
            ``1`` runs everything in this process. Workers are *spawned* and load the backend
            once each: call from under ``if __name__ == "__main__":`` in a script, and give
            a backend module that is importable by its ``__name__``. ``jestcore demo`` uses
            :func:`default_workers`.

    Returns:
        The results (see :func:`summarize`).

    Raises:
        TypeError: If ``config`` is not a :class:`DemoConfig`.
        ValueError: If ``backend`` is unknown or ``workers < 1``.
        ImportError: If the backend is not available.
    """
    if config is None:
        config = DemoConfig()
    if not isinstance(config, DemoConfig):
        raise TypeError(f"config must be a DemoConfig, got {type(config).__name__}")
    v.check_int("workers", workers, low=1)
    trainer = load_backend(backend) if isinstance(backend, str) else backend
    module_name = getattr(trainer, "__name__", "custom")
    backend_name = {v: k for k, v in BACKENDS.items()}.get(module_name, module_name)
    start = time.perf_counter()
    data = make_digits(config.data)
    needs_reference = any(METHOD_SPECS[m].uses_reference for m in config.methods)
    n_runs = config.seeds * len(config.methods)
    workers = min(workers, n_runs)
    if workers > 1:
        curves, reference_metrics = _run_parallel(
            config, module_name, needs_reference, workers, progress
        )
    else:
        curves, reference_metrics = _run_serial(config, trainer, data, needs_reference, progress)
    results = summarize(
        curves,
        config,
        pool_size=len(data.pool),
        reference_metrics=reference_metrics,
    )
    results["backend"] = backend_name
    results["data"] = data.summary()
    results["workers"] = workers
    results["wall_seconds"] = time.perf_counter() - start
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / "results.json", results)
        plot_curves(results, folder / "curves.png")
    return results


def _run_serial(
    config: DemoConfig, trainer: Trainer, data: Digits, needs_reference: bool, progress: bool
) -> tuple[dict[str, list[Curve]], list[Metrics]]:
    curves: dict[str, list[Curve]] = {m: [] for m in config.methods}
    reference_metrics: list[Metrics] = []
    runs = config.seeds * (len(config.methods) + needs_reference)
    with _bar(runs, "demo runs", progress, position=0) as overall:
        for seed in range(config.seeds):
            cached = None
            if needs_reference:
                with _bar(config.reference_steps, f"reference seed {seed}", progress, 1) as bar:
                    cached, metrics = _reference_task(
                        trainer, data, config, seed, lambda t, bar=bar: bar.update(t - bar.n)
                    )
                reference_metrics.append(metrics)
                overall.update(1)
            for method in config.methods:
                with _bar(config.steps, f"{method} seed {seed}", progress, 1) as bar:

                    def on_eval(step: int, metrics: Metrics, bar: Any = bar) -> None:
                        bar.update(step - bar.n)
                        bar.set_postfix(acc=f"{metrics.zero_shot:.3f}")

                    uses_reference = METHOD_SPECS[method].uses_reference
                    curve = trainer.train_learner(
                        data, cached if uses_reference else None, method, config, seed,
                        on_eval=on_eval,
                    )  # fmt: skip
                curves[method].append(curve)
                overall.update(1)
    return curves, reference_metrics


def _run_parallel(
    config: DemoConfig, module_name: str, needs_reference: bool, workers: int, progress: bool
) -> tuple[dict[str, list[Curve]], list[Metrics]]:
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    total = config.seeds * (config.steps * len(config.methods))
    total += config.seeds * config.reference_steps * needs_reference
    done_steps: dict[tuple[str, int], int] = {}
    curves: dict[tuple[str, int], Curve] = {}
    references: dict[int, tuple[jestcore.PairEmbeddings, Metrics]] = {}
    executor = ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_worker_init,
        initargs=(module_name, config.data, messages),
    )
    pending: dict[Future[Any], tuple[str, int]] = {}

    def submit_learners(seed: int) -> None:
        for method in config.methods:
            cached = references[seed][0] if METHOD_SPECS[method].uses_reference else None
            future = executor.submit(_worker_learner, config, seed, method, cached)
            pending[future] = (method, seed)

    with _bar(total, f"demo ({workers} workers)", progress, position=0) as bar:

        def drain() -> None:
            while True:
                try:
                    key, step, accuracy = messages.get_nowait()
                except queue_module.Empty:
                    return
                bar.update(step - done_steps.get(key, 0))
                done_steps[key] = step
                if accuracy is not None:
                    bar.set_postfix_str(f"{key[0]} seed {key[1]}: acc {accuracy:.3f}")

        try:
            for seed in range(config.seeds):
                if needs_reference:
                    pending[executor.submit(_worker_reference, config, seed)] = ("reference", seed)
                else:
                    submit_learners(seed)
            while pending:
                finished, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                drain()
                for future in finished:
                    kind, seed = pending.pop(future)
                    if kind == "reference":
                        references[seed] = future.result()
                        submit_learners(seed)
                    else:
                        curves[(kind, seed)] = future.result()
            drain()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
            messages.close()
    by_method = {m: [curves[(m, s)] for s in range(config.seeds)] for m in config.methods}
    metrics = [references[s][1] for s in range(config.seeds)] if needs_reference else []
    return by_method, metrics


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Writes JSON atomically (a temporary file, then a rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def summarize(
    curves: dict[str, list[Curve]],
    config: DemoConfig,
    *,
    pool_size: int,
    reference_metrics: Sequence[Metrics] = (),
) -> dict[str, Any]:
    """The results of a demo run as JSON-ready values.

    The target is uniform's final zero-shot accuracy:
    :func:`jestcore.adapters.demo.costs.final_value` of the seed-mean uniform curve (smoothed
    over ``config.smoothing_window`` evaluations).
    Per seed, ``final_accuracy`` is the smoothed final value of that seed's curve and
    ``steps_to_target`` / ``flops_to_target`` the first evaluation at which the smoothed curve
    reaches the target (``None`` if never). FLOPs include scoring, selection, training and the
    one-time cached reference pass over the pool (for methods that use the reference).

    Args:
        curves: Per method, one :class:`Curve` per seed (same evaluation steps).
        config: The run's config.
        pool_size: Rows in the pool (for the cached reference pass).
        reference_metrics: The reference model's test metrics, per seed.

    Returns:
        ``{"target_accuracy": float, "methods": {method: {"final_accuracy": [per seed],
        "steps_to_target": [...], "flops_to_target": [...], ...}}, ...}`` with more keys:
        per method the curves, the mean-curve steps/FLOPs to target, FLOPs per step by part;
        at the top the config, the reference's metrics and training FLOPs and the speed-ups of
        JEST over uniform.

    Raises:
        ValueError: If ``uniform`` is missing or curves disagree in their steps.
    """
    if "uniform" not in curves or not curves["uniform"]:
        raise ValueError("curves must include 'uniform' (it sets the target)")
    window = config.smoothing_window
    steps = curves["uniform"][0].steps
    for method, runs in curves.items():
        for run in runs:
            if not np.array_equal(run.steps, steps):
                raise ValueError(f"{method}: every curve must be evaluated at the same steps")
    mean_uniform = np.mean([c.zero_shot for c in curves["uniform"]], axis=0)
    target = costs.final_value(mean_uniform, window=window)
    reference_pass = pool_size * model_flops(config)
    methods: dict[str, Any] = {}
    for method, runs in curves.items():
        spec = METHOD_SPECS[method]
        per_step = method_step_flops(method, config)
        offset = reference_pass if spec.uses_reference else 0.0
        acc = np.asarray([c.zero_shot for c in runs])
        recall = np.asarray([c.recall_at_1 for c in runs])
        mean_curve = acc.mean(axis=0)
        mean_steps = costs.steps_to_target(steps, mean_curve, target, window=window)
        methods[method] = {
            "final_accuracy": [costs.final_value(a, window=window) for a in acc],
            "steps_to_target": [
                costs.steps_to_target(steps, a, target, window=window) for a in acc
            ],
            "flops_to_target": [
                costs.flops_to_target(steps, a, target, per_step, window=window, offset=offset)
                for a in acc
            ],
            "final_recall_at_1": [costs.final_value(r, window=window) for r in recall],
            "mean_curve_steps_to_target": mean_steps,
            "mean_curve_flops_to_target": None
            if mean_steps is None
            else offset + mean_steps * per_step.total,
            "flops_per_step": per_step.as_dict(),
            "flops_offset": offset,
            "description": spec.description,
            "seconds": [c.seconds for c in runs],
            "curves": {
                "steps": steps.tolist(),
                "zero_shot": acc.tolist(),
                "recall_at_1": recall.tolist(),
            },
        }
    results: dict[str, Any] = {
        "target_accuracy": target,
        "methods": methods,
        "config": {**config.as_dict(), "recipe": recipe_record(config)},
        "model_flops": {
            "forward_per_pair": model_flops(config),
            "forward_per_pair_4x4": model_flops(config, 2),
            "reference_pass_over_pool": reference_pass,
            "reference_training": 3.0
            * config.batch_size
            * model_flops(config)
            * config.reference_steps,
        },
    }
    if reference_metrics:
        results["reference"] = {
            "zero_shot": [m.zero_shot for m in reference_metrics],
            "recall_at_1": [m.recall_at_1 for m in reference_metrics],
        }
    uniform = methods["uniform"]
    speedups: dict[str, Any] = {}
    for method, entry in methods.items():
        s, f = entry["mean_curve_steps_to_target"], entry["mean_curve_flops_to_target"]
        speedups[method] = {
            "run_steps_over_steps_to_target": _ratio(config.steps, s),
            "uniform_steps_to_target_over_steps_to_target": _ratio(
                uniform["mean_curve_steps_to_target"], s
            ),
            "flops_to_target_over_uniform": _ratio(f, uniform["mean_curve_flops_to_target"]),
        }
    results["speedups"] = speedups
    return results


def _ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or ``None`` if either is missing or ``b`` is zero."""
    return None if a is None or b is None or b == 0 else a / b


def _mean_sd(values: Sequence[float | None], fmt: str) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "never"
    text = f"{np.mean(got):{fmt}} ± {np.std(got):{fmt}}"
    return text if len(got) == len(values) else f"{text} ({len(got)}/{len(values)})"


def format_table(results: dict[str, Any]) -> str:
    """The report: one row per method.

    Columns: final zero-shot accuracy and recall@1 (mean ± sd over seeds); steps to the target
    (uniform's final accuracy) on the seed-mean curve, and per seed (mean ± sd; a seed that
    never reaches it is left out, ``(k/n)`` says how many did); FLOPs to the target on the
    seed-mean curve, including scoring, selection and the cached reference pass, and as a
    multiple of uniform's; FLOPs per step and the share spent choosing the batch.

    Args:
        results: The output of :func:`summarize` / :func:`run_demo`.

    Returns:
        The table as text (no trailing newline).
    """
    cfg = results["config"]
    lines = [
        f"JEST demo ({results.get('backend', '?')}): {cfg['steps']} learner steps, "
        f"b = {cfg['batch_size']}, f = {cfg['filter_ratio']}, {cfg['n_chunks']} chunks, "
        f"gain {cfg.get('gain', 1.0):g}, {cfg.get('loss', 'sigmoid')} loss, "
        f"pool corruption {cfg['data']['corruption_rate']:.0%}, {cfg['seeds']} seeds",
        f"target = uniform's final zero-shot accuracy = {results['target_accuracy']:.3f}",
        "",
    ]
    header = (
        f"{'method':<15}{'final accuracy':>16}{'recall@1':>16}{'steps to target':>17}"
        f"{'per seed':>20}{'FLOPs to target':>17}{'x uniform':>11}{'FLOPs/step':>12}"
        f"{'choosing':>10}"
    )
    lines += [header, "-" * len(header)]
    for method, entry in results["methods"].items():
        fps = entry["flops_per_step"]
        steps = entry["mean_curve_steps_to_target"]
        flops = entry["mean_curve_flops_to_target"]
        ratio = results["speedups"][method]["flops_to_target_over_uniform"]
        lines.append(
            f"{method:<15}{_mean_sd(entry['final_accuracy'], '.3f'):>16}"
            f"{_mean_sd(entry['final_recall_at_1'], '.3f'):>16}"
            f"{'never' if steps is None else steps:>17}"
            f"{_mean_sd(entry['steps_to_target'], '.0f'):>20}"
            f"{'never' if flops is None else format(flops, '.2e'):>17}"
            f"{'-' if ratio is None else format(ratio, '.2f'):>11}"
            f"{fps['total']:>12.2e}{fps['scoring'] / fps['total']:>10.0%}"
        )
    if "reference" in results:
        ref = results["reference"]["zero_shot"]
        lines += [
            "",
            f"reference (curated split): zero-shot {np.mean(ref):.3f} ± {np.std(ref):.3f}; its "
            f"training ({results['model_flops']['reference_training']:.2e} FLOPs) is not "
            "charged, its cached pass over the pool is.",
        ]
    jest = results["speedups"].get("jest")
    if jest is not None and jest["uniform_steps_to_target_over_steps_to_target"] is not None:
        ratio = jest["uniform_steps_to_target_over_steps_to_target"]
        lines.append(
            f"jest vs uniform (seed-mean curves): {ratio:.1f}x fewer steps to the target "
            f"({jest['run_steps_over_steps_to_target']:.1f}x fewer than the whole run), "
            f"{jest['flops_to_target_over_uniform']:.2f}x the FLOPs"
        )
    return "\n".join(lines)


def plot_curves(results: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Saves a PNG of seed-mean zero-shot accuracy vs learner steps and vs total FLOPs.

    Shaded bands are ± one standard deviation over seeds; the dashed line is the target.

    Args:
        results: The output of :func:`summarize` / :func:`run_demo`.
        path: Where to write the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for method, entry in results["methods"].items():
        steps = np.asarray(entry["curves"]["steps"])
        acc = np.asarray(entry["curves"]["zero_shot"])
        mean, sd = acc.mean(axis=0), acc.std(axis=0)
        flops = costs.cumulative_flops(
            steps, entry["flops_per_step"]["total"], offset=entry["flops_offset"]
        )
        for ax, x in ((axes[0], steps), (axes[1], flops)):
            (line,) = ax.plot(x, mean, label=method, linewidth=1.6)
            ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.15)
    for ax in axes:
        ax.axhline(results["target_accuracy"], color="0.3", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("learner steps")
    axes[1].set_xlabel("total FLOPs (training + scoring + selection + cached reference pass)")
    axes[1].set_xscale("log")
    axes[0].set_ylabel("zero-shot accuracy (test)")
    axes[0].legend(loc="lower right", fontsize=9)
    cfg = results["config"]
    fig.suptitle(
        f"JEST on noisy digits ({cfg['data']['corruption_rate']:.0%} of the pool corrupted), "
        f"b = {cfg['batch_size']}, f = {cfg['filter_ratio']}, mean ± sd over {cfg['seeds']} seeds"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
