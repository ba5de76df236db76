"""A SigLIP (or CLIP) dual-encoder trainer in JAX and optax, with JEST selection in the jitted step.

Two layers:

* **General** (any data, any model): a :class:`DualEncoder` is a pure ``init`` / ``image`` /
  ``text`` triple of functions on a pytree of parameters (no framework beyond JAX);
  :class:`SigLIPTrainer` holds it with a static :class:`TrainConfig` (method, sizes, optimizer)
  and offers pure, jittable pieces (:meth:`~SigLIPTrainer.init`, :meth:`~SigLIPTrainer.loss`,
  :meth:`~SigLIPTrainer.step`) plus :meth:`~SigLIPTrainer.run`, a compiled loop of many steps,
  and :meth:`~SigLIPTrainer.fit`, which trains on your arrays (images, token ids) end to end.
  ``TrainConfig(loss="softmax")`` trains CLIP-style instead (:func:`clip_loss`: symmetric
  cross-entropy, a learnable temperature, no bias) and selects under the same softmax loss.
  One step draws nothing itself: it gets ``N`` super-batch rows of the training arrays, scores
  them with the learner (at a lower resolution for Flexi) and the cached reference embeddings,
  selects ``b`` with :class:`jestcore.adapters.jax.JESTSelector` (chunk loop as ``lax.scan``),
  gathers them with :func:`jestcore.adapters.jax.gather` and takes one Adam step.
* **Shared recipe**: the methods, super-batch sizes and draws and the learning-rate schedule
  are :mod:`jestcore.adapters.recipe`'s (the PyTorch trainer and the demo use the same), so the
  JAX and PyTorch trainers train the same models on the same batches.

The demo application drives this trainer through :mod:`jestcore.adapters.demo.jax_backend`;
nothing here imports the demo.

Compilation: :meth:`SigLIPTrainer.run` is one module-level ``jax.jit`` whose static argument is
the trainer (hashable: the model's functions and the config), and whose loop over steps is a
``lax.fori_loop`` with a traced trip count. So a trainer (model, config and method) compiles
once per shape of its inputs, whatever the seed, the reference or the number of steps run
between evaluations.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 4, size=256)
    >>> images = np.eye(4, 16, dtype=np.float32)[labels] + 0.1 * rng.random((256, 16), "f4")
    >>> tokens = (labels[:, None] + 1).astype(np.int32)  # one word per caption
    >>> model = mlp_dual_encoder(pixels=16, hidden=32, embed_dim=8, vocab_size=5)
    >>> ref = SigLIPTrainer(model, TrainConfig(steps=30, batch_size=16, learning_rate=1e-2))
    >>> ref_state, _ = ref.fit(ref.init(1), images[:128], tokens[:128])  # a "curated" part
    >>> reference = ref.embed(ref_state.params, images, tokens)  # cached reference embeddings
    >>> trainer = SigLIPTrainer(model, TrainConfig(steps=30, batch_size=16, method="jest",
    ...                                            n_chunks=4, learning_rate=1e-2))
    >>> state, losses = trainer.fit(trainer.init(0), images, tokens, reference=reference)
    >>> losses.shape, bool(losses[-5:].mean() < losses[:5].mean())
    ((30,), True)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jestcore.adapters import recipe
from jestcore.adapters.jax.state import JESTSelector, SelectionState, init_state
from jestcore.adapters.jax.trees import gather

from jestcore import PairEmbeddings
from jestcore import _validation as v
from jestcore.streaming import check_loss

__all__ = [
    "DualEncoder",
    "SigLIPTrainer",
    "StepInfo",
    "TrainConfig",
    "TrainState",
    "clip_loss",
    "l2_normalize",
    "learning_rate_schedule",
    "mlp_dual_encoder",
    "siglip_loss",
]

#: The token id of padding (the text encoder ignores it).
_PAD_ID = 0


# --------------------------------------------------------------------------------------------
# Models.


class DualEncoder(NamedTuple):
    """An image encoder and a text encoder as pure functions of one parameter pytree.

    Any functions will do (plain ``jax.numpy``, or the ``init`` / ``apply`` of a Flax or
    Equinox module wrapped into these signatures); the trainer L2-normalizes what they return.
    Hashable (it is a tuple of functions), so it can be a static argument of ``jax.jit``: build
    it once and reuse the same object, or every new object compiles anew.

    Attributes:
        init: ``key -> params``: a fresh parameter pytree from a ``jax.random`` key.
        image: ``(params, images) -> (n, d)`` image embeddings; ``images`` is a batch of the
            training images (any trailing shape).
        text: ``(params, tokens) -> (n, d)`` text embeddings of int token ids ``(n, seq_len)``.
        pooled_image: ``(params, pooled, factor) -> (n, d)``: image embeddings from images
            average-pooled by ``factor`` (:func:`jestcore.adapters.recipe.downsample`), for Flexi
            scoring at a lower resolution; ``None`` if the model has no such mode.
    """

    init: Callable[[Any], Any]
    image: Callable[[Any, Any], Any]
    text: Callable[[Any, Any], Any]
    pooled_image: Callable[[Any, Any, int], Any] | None = None


def _dense_init(key: Any, fan_in: int, fan_out: int) -> dict[str, Any]:
    """PyTorch's ``nn.Linear`` default: weight and bias uniform in ``+-1/sqrt(fan_in)``."""
    bound = 1.0 / math.sqrt(fan_in)
    kw, kb = jax.random.split(key)
    return {
        "w": jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -bound, bound),
        "b": jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound),
    }


def _pool_weights(w: Any, factor: int) -> Any:
    """First-layer weights ``(s*s, h)`` summed over each ``factor x factor`` pixel block."""
    side = math.isqrt(w.shape[0])
    t = side // factor
    return jnp.sum(jnp.reshape(w, (t, factor, t, factor, w.shape[1])), axis=(1, 3)).reshape(
        t * t, w.shape[1]
    )


@functools.lru_cache(maxsize=64)
def mlp_dual_encoder(
    *, pixels: int = 64, hidden: int = 512, embed_dim: int = 32, vocab_size: int = 36
) -> DualEncoder:
    """A small dual encoder (the demo's): an image MLP and a bag-of-words text encoder.

    * image: ``pixels -> hidden -> embed_dim`` with a ReLU (dense layers initialized like
      PyTorch's ``nn.Linear``: uniform in ``+-1/sqrt(fan_in)``);
    * text: the sum of a ``(vocab_size, embed_dim)`` embedding (``N(0, 1)`` init) over the
      non-padding tokens (id 0);
    * pooled images (Flexi): the first layer's weights summed over each ``factor x factor``
      block, applied to the block means: exactly the full layer on the nearest-neighbour
      upsampled image, at ``1 / factor**2`` of its FLOPs, with shared weights.

    Cached: the same arguments return the same object (so jitted trainers are reused).

    Args:
        pixels: Flattened square image size (``s * s``).
        hidden: Hidden width of the image MLP.
        embed_dim: Embedding width of both encoders.
        vocab_size: Number of token ids (default 36, the demo's vocabulary).

    Returns:
        The :class:`DualEncoder`.

    Raises:
        ValueError: If a size is < 1 or ``pixels`` is not a square.
    """
    for name, value in (
        ("pixels", pixels),
        ("hidden", hidden),
        ("embed_dim", embed_dim),
        ("vocab_size", vocab_size),
    ):
        v.check_int(name, value, low=1)
    if math.isqrt(pixels) ** 2 != pixels:
        raise ValueError(f"pixels must be a square number (flattened s x s images), got {pixels}")

    def init(key: Any) -> dict[str, Any]:
        k1, k2, k3 = jax.random.split(key, 3)
        return {
            "image": {
                "l1": _dense_init(k1, pixels, hidden),
                "l2": _dense_init(k2, hidden, embed_dim),
            },
            "text": jax.random.normal(k3, (vocab_size, embed_dim), jnp.float32),
        }

    def mlp(p: Any, w1: Any, x: Any) -> Any:
        h = jax.nn.relu(x @ w1 + p["l1"]["b"])
        return h @ p["l2"]["w"] + p["l2"]["b"]

    def image(params: Any, images: Any) -> Any:
        x = jnp.reshape(images, (images.shape[0], -1)).astype(jnp.float32)
        return mlp(params["image"], params["image"]["l1"]["w"], x)

    def pooled_image(params: Any, pooled: Any, factor: int) -> Any:
        x = jnp.reshape(pooled, (pooled.shape[0], -1)).astype(jnp.float32)
        w1 = params["image"]["l1"]["w"]
        return mlp(params["image"], w1 if factor == 1 else _pool_weights(w1, factor), x)

    def text(params: Any, tokens: Any) -> Any:
        table = params["text"]
        mask = (tokens != _PAD_ID).astype(table.dtype)[..., None]
        return jnp.sum(jnp.take(table, tokens, axis=0) * mask, axis=1)

    return DualEncoder(init, image, text, pooled_image)


# --------------------------------------------------------------------------------------------
# Loss and schedule.


def l2_normalize(x: Any) -> Any:
    """Rows of ``x`` divided by their norm (at least ``1e-12``), as PyTorch's ``F.normalize``."""
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, 1e-12)


def siglip_loss(image: Any, text: Any, log_scale: Any, bias: Any) -> Any:
    """The SigLIP loss of a batch of ``b`` pairs.

    ``-(1/b) sum_ij log sigmoid(z_ij (exp(t) <image_i, text_j> + bias))``, where ``z_ij`` is
    +1 on the diagonal (matching pairs) and -1 elsewhere.

    Args:
        image: ``(b, d)`` unit image embeddings.
        text: ``(b, d)`` unit text embeddings.
        log_scale: ``t``, the log of the temperature (0-d).
        bias: The bias (0-d).

    Returns:
        The 0-d loss.

    Example:
        >>> e = jnp.eye(2)
        >>> round(float(siglip_loss(e, e, 0.0, 0.0)), 4)  # (2 softplus(-1) + 2 softplus(0)) / 2
        1.0064
    """
    logits = jnp.exp(log_scale) * (image @ text.T) + bias
    z = 2.0 * jnp.eye(image.shape[0], dtype=logits.dtype) - 1.0
    return jnp.sum(jax.nn.softplus(-z * logits)) / image.shape[0]


def clip_loss(image: Any, text: Any, log_scale: Any) -> Any:
    """CLIP's loss of a batch of ``b`` pairs: symmetric cross-entropy (InfoNCE both ways).

    With ``L = exp(t) * image @ text.T``: ``-(1/2b) sum_i (log softmax(L)_ii +
    log softmax(L.T)_ii)``, the softmaxes over each row. No bias (it cancels in a softmax).

    Args:
        image: ``(b, d)`` unit image embeddings.
        text: ``(b, d)`` unit text embeddings.
        log_scale: ``t``, the log of the temperature (0-d).

    Returns:
        The 0-d loss.

    Example:
        >>> e = jnp.eye(2)
        >>> round(float(clip_loss(e, e, 0.0)), 4)  # -log(e / (e + 1))
        0.3133
    """
    logits = jnp.exp(log_scale) * (image @ text.T)
    rows = jnp.diagonal(jax.nn.log_softmax(logits, axis=1))
    columns = jnp.diagonal(jax.nn.log_softmax(logits, axis=0))
    return -0.5 * (jnp.mean(rows) + jnp.mean(columns))


def learning_rate_schedule(peak: float, total_steps: int, warmup_steps: int) -> optax.Schedule:
    """Linear warm-up to ``peak`` over ``warmup_steps``, then cosine decay to 0 at ``total_steps``.

    Step ``t`` (0-based) gets ``peak * (t + 1) / w`` while ``t < w``, then ``peak * (1 + cos(pi
    * (t - w) / (total_steps - w))) / 2``: exactly :func:`jestcore.adapters.recipe.learning_rate`
    (the PyTorch trainer's schedule), built from ``optax.linear_schedule`` and
    ``optax.cosine_decay_schedule``. (``optax.warmup_cosine_decay_schedule`` starts at
    ``init_value`` instead of ``peak / w`` and is one step later, so it would not match.)

    Args:
        peak: The peak learning rate.
        total_steps: Steps of the run.
        warmup_steps: Warm-up steps ``w`` (>= 1).

    Returns:
        An optax schedule (``step -> rate``).

    Example:
        >>> s = learning_rate_schedule(1.0, 10, 1)
        >>> [round(float(s(t)), 3) for t in (0, 1, 5, 9)]
        [1.0, 1.0, 0.587, 0.03]
    """
    warm = max(1, int(warmup_steps))
    return optax.join_schedules(
        [
            optax.linear_schedule(peak / warm, peak, max(0, warm - 1)),
            optax.cosine_decay_schedule(peak, max(1, int(total_steps) - warm)),
        ],
        [warm],
    )


# --------------------------------------------------------------------------------------------
# The trainer.


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Static configuration of a training run (hashable: a static argument of ``jax.jit``).

    Attributes:
        steps: Steps of the run (the length of the learning-rate schedule).
        method: One of :data:`jestcore.adapters.recipe.METHODS`: ``"uniform"``,
            ``"hard_learner"``, ``"easy_reference"``, ``"independent"``, ``"jest"`` or
            ``"flexi_jest"`` (see :data:`jestcore.adapters.recipe.METHOD_SPECS`).
        batch_size: ``b``, the examples trained on per step.
        filter_ratio: ``f``; the super-batch has ``N = round(b / (1 - f))`` examples.
        n_chunks: Chunks of joint selection.
        gain: The score gain of the sampling (default 100.0, the paper's recipe; 1.0 is
            Algorithm 1 as printed); see :func:`jestcore.joint_select`.
        loss: ``"sigmoid"`` (SigLIP, :func:`siglip_loss`, with a learnable bias) or
            ``"softmax"`` (CLIP, :func:`clip_loss`: a learnable temperature and no bias
            parameter); the training loss and the loss selection scores under, for the
            learner and the reference alike (train the reference with the same loss).
        learning_rate: Peak Adam learning rate.
        warmup_fraction: Fraction of ``steps`` of linear warm-up (at least one step).
        init_log_scale: Initial log of the temperature (``log 10`` for both losses; CLIP
            itself starts at ``log(1 / 0.07)``).
        init_bias: Initial SigLIP bias (unused with ``loss="softmax"``).
        adam_beta2: Adam's ``beta2``; ``None`` (the default) means
            :func:`jestcore.adapters.recipe.adam_beta2`: 0.95 when the method filters
            (``f > 0``, the paper's Appendix A.2), 0.999 otherwise. See :attr:`beta2`.
    """

    steps: int
    method: str = "uniform"
    batch_size: int = 64
    filter_ratio: float = 0.8
    n_chunks: int = 16
    gain: float = 100.0
    loss: str = "sigmoid"
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.05
    init_log_scale: float = math.log(10.0)
    init_bias: float = -10.0
    adam_beta2: float | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "n_chunks"):
            v.check_int(name, getattr(self, name), low=1)
        recipe.method_spec(self.method)
        if self.n_chunks > self.batch_size:
            raise ValueError(
                f"n_chunks must be at most batch_size = {self.batch_size}, got {self.n_chunks}"
            )
        v.check_ratio("filter_ratio", self.filter_ratio)
        v.check_gain(self.gain)
        check_loss(self.loss)
        recipe.check_real("warmup_fraction", self.warmup_fraction, low=0.0, high=1.0)
        recipe.check_real("learning_rate", self.learning_rate, low=0.0)
        recipe.check_real("init_log_scale", self.init_log_scale)
        recipe.check_real("init_bias", self.init_bias)
        if self.adam_beta2 is not None:
            recipe.check_real("adam_beta2", self.adam_beta2, low=0.0, high=1.0)
        if self.spec.factor > 1 and self.batch_size < 2:
            raise ValueError(
                f"method {self.method!r} co-trains two halves: batch_size must be >= 2"
            )

    @property
    def beta2(self) -> float:
        """Adam's ``beta2`` of the run: ``adam_beta2``, or the method's default."""
        if self.adam_beta2 is not None:
            return float(self.adam_beta2)
        return recipe.adam_beta2(self.method, self.filter_ratio)

    @property
    def spec(self) -> recipe.MethodSpec:
        """The method's :class:`jestcore.adapters.recipe.MethodSpec`."""
        return recipe.method_spec(self.method)

    @property
    def super_batch(self) -> int:
        """``N = round(b / (1 - f))``, the super-batch size (also drawn for uniform sampling)."""
        return recipe.super_batch_size(self.batch_size, self.filter_ratio)

    @property
    def rows_per_step(self) -> int:
        """The super-batch rows a step uses: ``N``, or the first ``b`` for uniform sampling."""
        return self.batch_size if self.spec.score is None else self.super_batch

    @property
    def warmup_steps(self) -> int:
        """Warm-up steps: :func:`jestcore.adapters.recipe.warmup_steps` of the run."""
        return recipe.warmup_steps(self.steps, self.warmup_fraction)


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree: checkpoint it like any other).

    Attributes:
        params: ``{"encoder": model params, "log_scale": 0-d, "bias": 0-d}`` (no ``"bias"``
            with ``loss="softmax"``).
        opt_state: The optax Adam state.
        selection: The :class:`jestcore.adapters.jax.SelectionState` (seed, step): step ``t``
            selects with seed ``jestcore.fold_in(seed, t)``, as
            the demo's :func:`jestcore.adapters.demo.selection_seed`.
    """

    params: Any
    opt_state: Any
    selection: SelectionState


class StepInfo(NamedTuple):
    """What one step reports.

    Attributes:
        loss: The training loss (SigLIP or CLIP) of the trained sub-batch before the update.
        rows: The ``b`` trained rows of the training arrays (int32).
    """

    loss: Any
    rows: Any


@dataclasses.dataclass(frozen=True)
class SigLIPTrainer:
    """A SigLIP dual encoder trained with a selection method; pure, jittable pieces.

    Frozen and hashable, so it is a static argument of ``jax.jit`` (all of its methods that
    take arrays are pure functions of them).

    Attributes:
        model: The :class:`DualEncoder`.
        config: The :class:`TrainConfig`.
    """

    model: DualEncoder
    config: TrainConfig

    def __post_init__(self) -> None:
        if not isinstance(self.model, DualEncoder):
            raise TypeError(f"model must be a DualEncoder, got {type(self.model).__name__}")
        if not isinstance(self.config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(self.config).__name__}")
        if self.config.spec.factor > 1 and self.model.pooled_image is None:
            raise ValueError(
                f"method {self.config.method!r} scores pooled images, but the model has no "
                "pooled_image function"
            )

    # -- pieces --------------------------------------------------------------------------------

    @property
    def optimizer(self) -> optax.GradientTransformation:
        """Adam (betas 0.9 / ``config.beta2``, eps 1e-8) on :func:`learning_rate_schedule`.

        ``beta2`` is 0.95 when the method filters and 0.999 otherwise, unless the config sets
        it (:attr:`TrainConfig.beta2`); selected examples are never re-weighted.
        """
        c = self.config
        return optax.adam(
            learning_rate_schedule(c.learning_rate, c.steps, c.warmup_steps),
            b1=recipe.ADAM_BETA1,
            b2=c.beta2,
            eps=1e-8,
        )

    def init(
        self, seed: int, /, *, param_seed: int | None = None, params: Any = None
    ) -> TrainState:
        """A new run's state: fresh parameters, Adam state and selection state.

        Args:
            seed: An int in ``[0, 2**32)``: selection step ``t`` uses seed
                ``jestcore.fold_in(seed, t)``, and the parameters come from
                ``jax.random.key(seed)`` unless ``param_seed`` or ``params`` is given.
            param_seed: Seed of the parameters' key instead of ``seed``.
            params: Start from these parameters (``{"encoder", "log_scale", "bias"}``; no
                ``"bias"`` with ``loss="softmax"``).

        Returns:
            The :class:`TrainState`.

        Raises:
            ValueError: If a seed is not an int in ``[0, 2**32)``.
        """
        for name, value in (("seed", seed), ("param_seed", param_seed)):
            if value is None and name == "param_seed":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
                raise ValueError(f"{name} must be an int in [0, 2**32), got {value!r}")
        if params is None:
            key = jax.random.key(seed if param_seed is None else param_seed)
            params = {
                "encoder": self.model.init(key),
                "log_scale": jnp.asarray(self.config.init_log_scale, jnp.float32),
            }
            if self.config.loss == "sigmoid":
                params["bias"] = jnp.asarray(self.config.init_bias, jnp.float32)
        return TrainState(params, self.optimizer.init(params), init_state(seed))

    def embeddings(
        self, params: Any, images: Any, tokens: Any, /, *, factor: int = 1
    ) -> PairEmbeddings:
        """Unit embeddings of pairs with ``scale = exp(t)`` and ``bias`` (pure, jittable).

        Without a ``"bias"`` parameter (``loss="softmax"``) the bias is 0.

        Args:
            params: ``{"encoder", "log_scale", "bias"}``.
            images: ``(n, ...)`` images (pooled by ``factor`` when ``factor > 1``).
            tokens: ``(n, seq_len)`` int token ids.
            factor: The pooling factor of ``images`` (1: full resolution).

        Returns:
            The :class:`jestcore.PairEmbeddings`.
        """
        return _pair_embeddings(self.model, params, images, tokens, factor)

    def loss(self, params: Any, images: Any, tokens: Any, /, *, factor: int = 1) -> Any:
        """The training loss of a batch of pairs, pure and jittable.

        :func:`siglip_loss`, or :func:`clip_loss` with ``config.loss="softmax"``. ``images``
        are pooled by ``factor`` when ``factor > 1`` (Flexi co-training).
        """
        image = _embed_images(self.model, params, images, factor)
        text = _embed_texts(self.model, params, tokens)
        if self.config.loss == "softmax":
            return clip_loss(image, text, params["log_scale"])
        return siglip_loss(image, text, params["log_scale"], params["bias"])

    def select(
        self, state: TrainState, data: dict[str, Any], reference: PairEmbeddings | None, rows: Any
    ) -> tuple[Any, SelectionState]:
        """The ``b`` positions of ``rows`` that the method trains on (pure, jittable).

        Args:
            state: The current state (its parameters score; its selection state seeds).
            data: ``{"images", "tokens"}`` (and ``"pooled"`` for Flexi scoring) training arrays.
            reference: The reference's embeddings of all training rows (or ``None``).
            rows: ``(N,)`` int rows of the super-batch (``(b,)`` or more for uniform).

        Returns:
            ``(positions in rows, next selection state)``.
        """
        spec, b = self.config.spec, self.config.batch_size
        if spec.score is None:
            return jnp.arange(b), state.selection
        learner = None
        if spec.uses_learner:
            params = jax.lax.stop_gradient(state.params)
            images = jnp.take(data["pooled" if spec.factor > 1 else "images"], rows, axis=0)
            learner = self.embeddings(
                params, images, jnp.take(data["tokens"], rows, axis=0), factor=spec.factor
            )
        ref = None
        if spec.uses_reference:
            if reference is None:
                raise ValueError(f"method {self.config.method!r} needs reference embeddings")
            ref = PairEmbeddings(
                jnp.take(reference.image, rows, axis=0),
                jnp.take(reference.text, rows, axis=0),
                reference.scale,
                reference.bias,
            )
        selector = JESTSelector(
            batch_size=b,
            n_chunks=spec.n_chunks(self.config.n_chunks),
            score=spec.score,
            loss=self.config.loss,
            gain=self.config.gain,
        )
        return selector.select(state.selection, learner, ref)

    def step(
        self, state: TrainState, data: dict[str, Any], reference: PairEmbeddings | None, rows: Any
    ) -> tuple[TrainState, StepInfo]:
        """One step: score and select within ``rows``, then one Adam step (pure, jittable).

        Flexi-JEST (a method with ``factor > 1``, Algorithm 2 of the paper) trains the selected
        rows ``[::2]`` at full resolution and ``[1::2]`` on ``data["pooled"]``
        (:func:`jestcore.adapters.recipe.flexi_split`); the loss is the mean of the two halves'
        losses, so the low-resolution path that scores is co-trained. The scoring
        forward pass is not re-used for the gradient (a VJP through all ``N`` rows costs more
        than a forward pass of the ``b`` selected ones).

        Args:
            state: The current state.
            data: ``{"images", "tokens"}`` (and ``"pooled"`` for Flexi) arrays of all training
                rows (see :meth:`prepare`).
            reference: The reference's embeddings of all training rows (``None`` when the
                method does not use it).
            rows: ``(N,)`` int rows of this step's super-batch, in random order (uniform
                trains on the first ``b``).

        Returns:
            ``(next state, StepInfo)``.
        """
        positions, selection = self.select(state, data, reference, rows)
        trained = jnp.take(rows, positions, axis=0)
        factor = self.config.spec.factor
        if factor > 1:
            full, low = recipe.flexi_split(self.config.batch_size)
            hi = gather({"images": data["images"], "tokens": data["tokens"]}, trained[full])
            lo = gather({"images": data["pooled"], "tokens": data["tokens"]}, trained[low])

            def loss_fn(params: Any) -> Any:
                high_loss = self.loss(params, hi["images"], hi["tokens"])
                low_loss = self.loss(params, lo["images"], lo["tokens"], factor=factor)
                return 0.5 * (high_loss + low_loss)

        else:
            batch = gather({"images": data["images"], "tokens": data["tokens"]}, trained)

            def loss_fn(params: Any) -> Any:
                return self.loss(params, batch["images"], batch["tokens"])

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, selection), StepInfo(loss, trained.astype(jnp.int32))

    def prepare(self, images: Any, tokens: Any, /, *, pooled: Any = None) -> dict[str, Any]:
        """Training arrays on the device, checked, with pooled images when the method needs them.

        Args:
            images: ``(n, ...)`` real images.
            tokens: ``(n, seq_len)`` integer token ids.
            pooled: ``(n, ...)`` images pooled by the method's factor; by default computed with
                :func:`jestcore.adapters.recipe.downsample` (square images only).

        Returns:
            ``{"images", "tokens"}`` (and ``"pooled"``) JAX arrays.

        Raises:
            TypeError: If the arrays have the wrong dtypes.
            ValueError: If their shapes do not match or there are fewer than ``N`` rows.
        """
        images_np, tokens_np = np.asarray(images), np.asarray(tokens)
        if not (
            np.issubdtype(images_np.dtype, np.floating)
            or np.issubdtype(images_np.dtype, np.integer)
        ):
            raise TypeError(f"images must be a real array, got dtype {images_np.dtype}")
        if not np.issubdtype(tokens_np.dtype, np.integer):
            raise TypeError(f"tokens must be an integer array, got dtype {tokens_np.dtype}")
        if images_np.ndim < 2 or tokens_np.ndim != 2 or images_np.shape[0] != tokens_np.shape[0]:
            raise ValueError(
                "images must be (n, ...) and tokens (n, seq_len) with the same n, got shapes "
                f"{images_np.shape} and {tokens_np.shape}"
            )
        n = images_np.shape[0]
        if n < self.config.rows_per_step:
            raise ValueError(
                f"need at least {self.config.rows_per_step} training rows (a step's super-batch), "
                f"got {n}"
            )
        data = {
            "images": jnp.asarray(images_np, jnp.float32),
            "tokens": jnp.asarray(tokens_np, jnp.int32),
        }
        factor = self.config.spec.factor
        if factor > 1 and self.config.spec.uses_learner:
            low = recipe.downsample(images_np, factor) if pooled is None else np.asarray(pooled)
            if low.shape[0] != n:
                raise ValueError(f"pooled must have {n} rows, got shape {low.shape}")
            data["pooled"] = jnp.asarray(low, jnp.float32)
        return data

    def run(
        self,
        state: TrainState,
        data: dict[str, Any],
        reference: PairEmbeddings | None,
        rows: Any,
        n_steps: Any = None,
    ) -> tuple[TrainState, Any]:
        """The first ``n_steps`` steps of ``rows`` in one compiled loop.

        Compiles once per trainer and input shapes: ``n_steps`` is traced, so pad ``rows`` to
        a fixed number of steps and run fewer at the end.

        Args:
            state: The current state.
            data: Training arrays (:meth:`prepare`).
            reference: The reference's embeddings of all training rows, or ``None``.
            rows: ``(k, N)`` int super-batch rows of the next ``k`` steps.
            n_steps: How many of them to run (default ``k``).

        Returns:
            ``(state, losses)``: ``losses`` is ``(k,)``, the loss of each step run (0 after).
        """
        rows = jnp.asarray(rows, jnp.int32)
        if rows.ndim != 2 or rows.shape[1] < self.config.rows_per_step:
            raise ValueError(
                f"rows must be (k, N) with N >= {self.config.rows_per_step}, got {rows.shape}"
            )
        k = rows.shape[0]
        n_steps = k if n_steps is None else n_steps
        if reference is not None:
            reference = PairEmbeddings(*(jnp.asarray(a, jnp.float32) for a in reference))
        return _run_steps(self, state, data, reference, rows, jnp.asarray(n_steps, jnp.int32))

    def embed(self, params: Any, images: Any, tokens: Any, /, *, factor: int = 1) -> PairEmbeddings:
        """Compiled :meth:`embeddings` of NumPy or JAX arrays (JAX results)."""
        return _embed_pairs_jit(
            self.model,
            params,
            jnp.asarray(images, jnp.float32),
            jnp.asarray(tokens, jnp.int32),
            factor,
        )

    def fit(
        self,
        state: TrainState,
        images: Any,
        tokens: Any,
        /,
        *,
        reference: PairEmbeddings | None = None,
        pooled: Any = None,
        seed: int | None = None,
        draw: Callable[[int], Any] | None = None,
        eval_every: int | None = None,
        on_eval: Callable[[int, TrainState], None] | None = None,
        start: int = 0,
    ) -> tuple[TrainState, np.ndarray]:
        """Trains on your arrays for ``config.steps - start`` steps.

        Args:
            state: The starting state (:meth:`init`, or a checkpoint at step ``start``).
            images: ``(n, ...)`` training images.
            tokens: ``(n, seq_len)`` int token ids.
            reference: The reference's embeddings of all ``n`` rows (NumPy or JAX), for the
                methods that use it.
            pooled: Pooled images for Flexi scoring (default: computed, see :meth:`prepare`).
            seed: Seed of the super-batch draws (default: the selection seed of ``state``).
            draw: ``step -> (N,)`` distinct rows of that step's super-batch; by default ``N``
                distinct rows drawn uniformly (:func:`jestcore.adapters.recipe.draw_rows`).
            eval_every: Call ``on_eval`` every this many steps (and after the last step).
            on_eval: ``(step count, state) -> None``, e.g. to evaluate or checkpoint.
            start: The step count of ``state``.

        Returns:
            ``(state, losses)``: the final state and every step's loss (NumPy).
        """
        c = self.config
        data = self.prepare(images, tokens, pooled=pooled)
        n = data["images"].shape[0]
        if c.spec.uses_reference:
            if reference is None:
                raise ValueError(f"method {c.method!r} needs reference embeddings of the rows")
            if reference.image.shape[0] != n or reference.text.shape[0] != n:
                raise ValueError(
                    f"reference must embed all {n} training rows, got {reference.image.shape[0]}"
                )
        else:
            reference = None
        if seed is None:
            seed = int(state.selection.seed)
        if draw is None:  # N rows, as the demo draws them, also for uniform (the first b)
            width = c.super_batch if n >= c.super_batch else c.rows_per_step

            def draw(step: int) -> np.ndarray:
                return recipe.draw_rows(n, width, seed=seed, step=step)

        block = eval_every if eval_every is not None else min(c.steps, 100)
        losses = []
        points = [*range(start, c.steps, block), c.steps]
        for a, b in itertools.pairwise(points):
            rows = _block_rows(draw, a, b, block, c.rows_per_step)
            state, loss = self.run(state, data, reference, rows, b - a)
            losses.append(np.asarray(loss)[: b - a])
            if on_eval is not None:
                on_eval(b, state)
        return state, np.concatenate(losses) if losses else np.zeros(0, np.float32)


def _block_rows(rows: Callable[[int], Any], a: int, b: int, width: int, n: int) -> np.ndarray:
    """Rows of steps ``a..b-1``, padded with zeros to ``width`` steps (a fixed shape)."""
    out = np.zeros((width, n), dtype=np.int32)
    for i, t in enumerate(range(a, b)):
        out[i] = np.asarray(rows(t))[:n]
    return out


@functools.partial(jax.jit, static_argnums=0)
def _run_steps(
    trainer: SigLIPTrainer,
    state: TrainState,
    data: dict[str, Any],
    reference: PairEmbeddings | None,
    rows: Any,
    n_steps: Any,
) -> tuple[TrainState, Any]:
    def body(i: Any, carry: tuple[TrainState, Any]) -> tuple[TrainState, Any]:
        state, losses = carry
        state, info = trainer.step(state, data, reference, rows[i])
        return state, losses.at[i].set(info.loss)

    losses = jnp.zeros((rows.shape[0],), jnp.float32)
    return jax.lax.fori_loop(0, n_steps, body, (state, losses))


def _embed_images(model: DualEncoder, params: Any, images: Any, factor: int) -> Any:
    if factor == 1:
        return l2_normalize(model.image(params["encoder"], images))
    if model.pooled_image is None:
        raise ValueError("factor > 1 needs a model with a pooled_image function")
    return l2_normalize(model.pooled_image(params["encoder"], images, factor))


def _embed_texts(model: DualEncoder, params: Any, tokens: Any) -> Any:
    return l2_normalize(model.text(params["encoder"], tokens))


def _pair_embeddings(
    model: DualEncoder, params: Any, images: Any, tokens: Any, factor: int
) -> PairEmbeddings:
    return PairEmbeddings(
        _embed_images(model, params, images, factor),
        _embed_texts(model, params, tokens),
        jnp.exp(params["log_scale"]),
        params.get("bias", jnp.zeros((), jnp.float32)),
    )


_embed_pairs_jit = jax.jit(_pair_embeddings, static_argnums=(0, 4))
_embed_texts_jit = jax.jit(_embed_texts, static_argnums=0)
