"""JEST in a PyTorch training loop: :func:`select_batch` (one call) and :class:`JESTSelector`.

What drives the selection is given as the learner's and the reference model's outputs on the
super-batch:

* :class:`~jestcore.PairEmbeddings` (image and text embeddings with the model's scale and
  bias) for contrastive models: joint selection from embeddings under the sigmoid (SigLIP) or,
  with ``loss="softmax"``, the softmax (CLIP) loss, exact and O(N * b * d)
  (``method="independent"`` gives the per-example baseline on the matching-pair losses);
* or 1-D per-example losses (classification, language modelling): the batch loss is a sum of
  per-example terms, so independent selection is the exact answer;
* or precomputed ``scores``: an ``(N, N)`` matrix (joint) or an ``(N,)`` vector (independent).

The adapter checks what is its own (the batch's structure and size, how the outputs match it,
its options, the ranks of a global selection) and hands the outputs, seed and noise to the
spec (:func:`jestcore.joint_select_embeddings`, :func:`jestcore.joint_select`,
:func:`jestcore.independent_select`), which validates them once, naming the argument. Outputs
that the spec does not receive as given (per-example losses, embeddings selected
independently, every rank's outputs before a global exchange) are checked with the spec's own
validators.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any, NamedTuple

import array_api_compat
import torch
from jestcore.adapters.torch import distributed as dist_
from jestcore.adapters.torch.outputs import (
    check_values,
    describe,
    is_hf_output,
    is_pair_output,
    read_pair,
)
from jestcore.adapters.torch.trees import batch_size_of, leaves, take_rows
from jestcore.backends import get_backend
from jestcore.backends.torch import is_lazy

import jestcore
from jestcore import _validation as v
from jestcore._namespace import namespace_of, same_device
from jestcore.streaming import LOSSES, SCORES, _check_embeddings, check_loss, make_terms

__all__ = ["METHODS", "SCOPES", "JESTSelector", "SelectedBatch", "select_batch"]

#: Selection methods: joint (Algorithm 1) or independent (per-example scores).
METHODS = ("joint", "independent")
#: Distributed scopes; see :mod:`jestcore.adapters.torch.distributed`.
SCOPES = ("local", "global")

_TORCH = array_api_compat.array_namespace(torch.empty(0))


class SelectedBatch(NamedTuple):
    """The result of a selection.

    Attributes:
        batch: The selected sub-batch, with the structure of the super-batch.
        indices: The positions of the selected examples in the super-batch, in selection order
            (with ``scope="global"``: this rank's share, as positions in the rank-ordered
            concatenation of all ranks' super-batches).
        stats: Logging statistics, 0-d tensors on the scores' device (read them with
            ``.item()`` when you log, which synchronises): ``score_selected`` and ``score_all``,
            the mean per-example score (the diagonal of the score matrix: each example with its
            own pair) of the selected examples and of the whole super-batch (global ones with
            ``scope="global"``).
    """

    batch: Any
    indices: torch.Tensor
    stats: dict[str, torch.Tensor]


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _is_pair(x: Any) -> bool:
    return isinstance(x, tuple) and len(x) == 4


def _detached(x: Any) -> Any:
    return x.detach() if isinstance(x, torch.Tensor) else x


def _hf_hint(name: str) -> str:
    """How to give a Hugging Face output, which holds no temperature (HF keeps it on the model)."""
    return (
        f"pass the model that produced it as {name}_model=model, or score with "
        "score_forward(model, batch), which reads the temperature from the model"
    )


def _model_output(name: str, m: Any, model: Any = None) -> Any:
    """A model's outputs as ``PairEmbeddings`` or a losses tensor, detached (see ``_models``).

    Contrastive outputs that :func:`~jestcore.adapters.torch.pair_embeddings` reads are
    converted by it (a Hugging Face output with ``model``, the model that produced it);
    anything else is refused with what was received and what to pass.
    """
    if isinstance(m, torch.Tensor):
        if m.ndim == 2:
            raise ValueError(
                f"{name} must be 1-D, got shape {tuple(m.shape)}: per-example losses are (N,); "
                "reduce per-token losses (N, T) to one loss per example first, e.g. "
                "(token_losses * mask).sum(dim=1), since selection assumes the batch loss is a "
                "sum of per-example terms"
            )
        if m.ndim == 0:
            raise ValueError(
                f"{name} must be 1-D, got a 0-d tensor (a batch-mean loss?): compute one loss "
                "per example, e.g. with reduction='none'"
            )
        return m.detach()
    if _is_pair(m):
        return jestcore.PairEmbeddings(*map(_detached, m))
    if is_hf_output(m) and model is None:
        raise TypeError(
            f"{name} is a Hugging Face {type(m).__name__}, which holds no temperature (HF keeps "
            f"it on the model, in log space: model.logit_scale); {_hf_hint(name)}"
        )
    if is_pair_output(m):
        names, pair = read_pair(m, model=model, prefix=name)
        check_values(names, pair)
        return jestcore.PairEmbeddings(*map(_detached, pair))
    raise TypeError(
        f"{name} must be a PairEmbeddings(image, text, scale, bias), an open_clip output "
        "(image_features, text_features, logit_scale[, logit_bias]) as a tuple or an "
        "output_dict=True dict, a Hugging Face SiglipOutput / CLIPOutput with "
        f"{name}_model=model, or a 1-D tensor of per-example losses, got {describe(m)}"
    )


def _models(
    learner: Any, reference: Any, scores: Any, score: str, hf_models: tuple[Any, Any] = (None, None)
) -> tuple[dict[str, Any], str]:
    """The outputs that ``score`` needs, by argument name (detached), and their kind.

    ``hf_models`` are the ``learner_model`` and ``reference_model`` that Hugging Face outputs
    need. The kind is ``"embeddings"``, ``"losses"`` or ``"scores"``. Only the structure is
    checked here; dtypes, shapes and values are the spec's.
    """
    _check_choice("score", score, tuple(sorted(SCORES)))
    if scores is not None:
        if learner is not None or reference is not None:
            raise ValueError("give either scores=... or learner/reference outputs, not both")
        return {"scores": _detached(scores)}, "scores"
    models: dict[str, Any] = {}
    for name, m, model, sign in zip(
        ("learner", "reference"), (learner, reference), hf_models, SCORES[score], strict=True
    ):
        if not sign:
            continue
        if m is None:
            raise ValueError(f'score="{score}" needs the {name}\'s outputs, got {name}=None')
        models[name] = _model_output(name, m, model)
    if len({_is_pair(m) for m in models.values()}) > 1:
        raise TypeError("learner and reference must both be PairEmbeddings or both be losses")
    pairs = _is_pair(next(iter(models.values())))
    return models, "embeddings" if pairs else "losses"


def _n_examples(x: Any) -> int | None:
    """The number of examples that ``x`` describes (``None`` if it has no first dimension)."""
    shape: tuple[int, ...] = tuple(
        getattr(x.image if isinstance(x, jestcore.PairEmbeddings) else x, "shape", ())
    )
    return int(shape[0]) if shape else None


def _arrays(models: dict[str, Any]) -> dict[str, Any]:
    """Every tensor of the outputs (scale and bias included), by argument name."""
    out: dict[str, Any] = {}
    for name, m in models.items():
        if isinstance(m, jestcore.PairEmbeddings):
            out.update({f"{name}.{f}": getattr(m, f) for f in m._fields})
        else:
            out[name] = m
    return {k: t for k, t in out.items() if isinstance(t, torch.Tensor)}


def _check_finite(arrays: dict[str, torch.Tensor]) -> None:
    """The spec's finiteness check of ``arrays``, with one host read for all when all is well.

    A NaN or an infinity makes a sum non-finite, so finite sums prove every entry finite; a
    non-finite sum (possibly mere overflow) falls back to
    :func:`jestcore._validation.check_finite`, which names the first bad entry. Skipped for
    tensors whose values cannot be read (meta tensors, under ``torch.compile``).
    """
    eager = [(k, t) for k, t in arrays.items() if not is_lazy(t)]
    if not eager:
        return
    sums = [t.sum(dtype=torch.promote_types(t.dtype, torch.float32)).float() for _, t in eager]
    if bool(torch.isfinite(torch.stack(sums)).all()):
        return
    for name, t in eager:
        v.check_finite(name, t, _TORCH, get_backend(_TORCH))


def _check_outputs(models: dict[str, Any], kind: str, score: str, **others: Any) -> None:
    """The spec's checks of outputs it will not receive as given, and of ``others`` with them.

    Used where the adapter transforms or exchanges the outputs first: per-example losses,
    embeddings selected independently, and every rank's own outputs before a global exchange.
    """
    names = ", ".join(models)
    if kind == "embeddings":
        xp = _check_embeddings(models.get("learner"), models.get("reference"), score)[0]
        values = {k: t for k, t in _arrays(models).items() if t.ndim}
    else:
        xp = namespace_of(*models.values(), name=names)
        for name, t in models.items():
            v.check_floating(name, t, xp, ndim=2 if name == "scores" and t.ndim == 2 else 1)
            if t.ndim == 2 and t.shape[0] != t.shape[1]:
                raise ValueError(f"{name} must be a square (N, N) matrix, got {tuple(t.shape)}")
        values = dict(models)
    if xp is not _TORCH:
        raise TypeError(f"{names} must be torch tensors, got arrays of {xp.__name__}")
    same_device({**_arrays(models), **others})
    _check_finite({**values, **{k: t for k, t in others.items() if k == "noise" and t is not None}})


class _Plan(NamedTuple):
    """A checked selection: what every rank computes (``scope="global"``) or this rank does."""

    models: dict[str, Any]
    kind: str
    n_local: int
    n_select: int
    n_chunks: int
    joint: bool


def _plan(
    batch: Any,
    learner: Any,
    reference: Any,
    scores: Any,
    *,
    batch_size: Any,
    filter_ratio: Any,
    n_chunks: Any,
    score: Any,
    loss: Any,
    method: Any,
    seed: Any,
    noise: Any,
    greedy: Any,
    gain: Any,
    exchange: Any,
    block_size: Any,
    hf_models: tuple[Any, Any],
    world: int,
    is_global: bool,
) -> _Plan:
    """The adapter's checks of :func:`select_batch`'s arguments, before any work.

    Locally, what the spec receives as given is left to the spec. With ``scope="global"``
    every rank's own inputs are checked here in full (with the spec's validators), so a
    refused input is reported before any collective.
    """
    _check_choice("method", method, METHODS)
    check_loss(loss)
    _check_choice("exchange", exchange, dist_.EXCHANGES)
    n_local = batch_size_of(batch)
    if n_local == 0:
        raise ValueError("batch must hold at least one example, got an empty super-batch (N = 0)")
    models, kind = _models(learner, reference, scores, score, hf_models)
    for name, m in models.items():
        n = _n_examples(m)
        if n is not None and n != n_local:
            raise ValueError(f"{name} has outputs for {n} examples but the batch has {n_local}")
    n_select = world * jestcore.sub_batch_size(
        n_local, filter_ratio=filter_ratio, batch_size=batch_size
    )
    matrix = kind == "scores" and getattr(scores, "ndim", None) == 2
    joint = method == "joint" and (kind == "embeddings" or matrix)
    n_chunks = min(v.check_int("n_chunks", n_chunks, low=1), n_select)
    plan = _Plan(models, kind, n_local, n_select, n_chunks, joint)
    if not is_global:
        if not (joint or (kind == "scores" and not matrix)):  # the spec gets something else
            _check_outputs(models, kind, score)
        return plan
    if matrix:
        raise ValueError(
            'scope="global" cannot gather a score matrix (its off-diagonal blocks pair '
            "examples of different ranks): pass learner/reference embeddings instead"
        )
    dist_.check_tensor_leaves(batch)
    if block_size is not None:
        v.check_int("block_size", block_size, low=1)
    shape = (n_chunks, n_local * world) if joint else (n_local * world,)
    v.check_randomness(seed, noise, greedy, shape, _TORCH)
    v.check_gain(gain)
    _check_outputs(models, kind, score, noise=noise, seed=seed)
    return plan


def _as_seed(seed: Any) -> Any:
    """NumPy (and other) integer scalars as Python ints; anything else as given."""
    if isinstance(seed, bool | int | torch.Tensor) or not hasattr(type(seed), "__index__"):
        return seed
    return operator.index(seed)


#: What every rank of a global selection must agree on: (what is needed, how to show it).
AGREEMENT = (
    ("a super-batch of the same size", "int"),
    ("the same number of examples selected per rank", "int"),
    ("the same n_chunks", "int"),
    ("the same score", tuple(sorted(SCORES))),
    ("the same loss", LOSSES),
    ("the same method", METHODS),
    ("the same exchange", dist_.EXCHANGES),
    ("the same kind of outputs", ("embeddings", "losses", "scores")),
    ("the same source of randomness", ("seed", "noise", "greedy")),
    ("the same seed", "int"),
    ("the same gain", "float"),
    ("the same learner.scale", "float"),
    ("the same learner.bias", "float"),
    ("the same reference.scale", "float"),
    ("the same reference.bias", "float"),
    ("the same dtypes and widths of the outputs (and noise shape)", "hash"),
    ("the same batch structure, dtypes and shapes past the first dimension", "hash"),
)


def _layout(x: Any) -> list[Any]:
    """Per-tensor (path, dtype, trailing shape) of a batch, for hashing."""
    out: list[Any] = []
    for path, leaf in leaves(x):
        if isinstance(leaf, torch.Tensor):
            out.append((path, str(leaf.dtype), tuple(leaf.shape[1:])))
        else:
            out.append((path, type(leaf).__name__))
    return out


def _agreement(
    plan: _Plan,
    batch: Any,
    world: int,
    *,
    score: str,
    loss: str,
    method: str,
    exchange: str,
    seed: Any,
    noise: Any,
    gain: Any,
) -> list[Any]:
    """The values of :data:`AGREEMENT` for this rank (ints, floats or 0-d tensors)."""
    randomness = 0 if seed is not None else 1 if noise is not None else 2
    pairs = [plan.models.get(name) for name in ("learner", "reference")]
    scalars = [
        getattr(p, f) if isinstance(p, jestcore.PairEmbeddings) else 0.0
        for p in pairs
        for f in ("scale", "bias")
    ]
    outputs = [
        [(k, str(t.dtype), tuple(t.shape[1:])) for k, t in _arrays(plan.models).items() if t.ndim],
        None if noise is None else tuple(noise.shape),
    ]
    return [
        plan.n_local,
        plan.n_select // world,
        plan.n_chunks if plan.joint else 0,
        AGREEMENT[3][1].index(score),
        LOSSES.index(loss),
        METHODS.index(method),
        dist_.EXCHANGES.index(exchange),
        AGREEMENT[7][1].index(plan.kind),
        randomness,
        -1 if seed is None else seed,
        v.check_gain(gain),
        *scalars,
        dist_.stable_hash(outputs),
        dist_.stable_hash(_layout(batch)),
    ]


def _gathered(models: dict[str, Any], group: Any) -> dict[str, Any]:
    """Every rank's outputs, concatenated in rank order (scale and bias are shared)."""

    def gather(m: Any) -> Any:
        if isinstance(m, jestcore.PairEmbeddings):
            return m._replace(
                image=dist_.all_gather_rows(m.image, group),
                text=dist_.all_gather_rows(m.text, group),
            )
        return dist_.all_gather_rows(m, group)

    return {name: gather(m) for name, m in models.items()}


def _pair_losses(p: jestcore.PairEmbeddings, loss: str = "sigmoid") -> torch.Tensor:
    """Matching-pair losses, in float32+: the first chunk's logits of joint selection.

    ``softplus(-(scale * <image_i, text_i> + bias))`` for the sigmoid loss; for the softmax
    loss the spec's unconditional ``u_i = -scale * <image_i, text_i>`` (the negatives of a
    softmax depend on the rest of the batch, so a per-example score leaves them out).
    """
    if loss == "softmax":
        return make_terms([("learner", p, 1)], _TORCH, loss=loss)[0].diagonal()
    dtype = torch.promote_types(torch.promote_types(p.image.dtype, p.text.dtype), torch.float32)
    logits = torch.sum(p.image.to(dtype) * p.text.to(dtype), dim=1)
    return torch.nn.functional.softplus(-(p.scale * logits + p.bias))


def _per_example_scores(models: dict[str, Any], score: str, loss: str = "sigmoid") -> Any:
    """Per-example scores: given, the diagonal of a score matrix, or from per-example losses."""
    if "scores" in models:
        s = models["scores"]
        return torch.diagonal(s) if getattr(s, "ndim", None) == 2 else s
    losses = {
        k: _pair_losses(m, loss) if isinstance(m, jestcore.PairEmbeddings) else m
        for k, m in models.items()
    }
    if score == "learnability":
        return jestcore.learnability(losses["learner"], losses["reference"])
    if score == "hard_learner":
        return jestcore.hard_learner(losses["learner"])
    return jestcore.easy_reference(losses["reference"])


def _select(
    plan: _Plan,
    models: dict[str, Any],
    score: str,
    loss: str,
    block_size: Any,
    **randomness: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spec's selection, then the per-example scores it was drawn from (for stats).

    ``randomness`` is ``seed``, ``noise``, ``greedy`` and ``gain``, passed to the spec as given.
    """
    n, n_chunks = plan.n_select, plan.n_chunks
    if not plan.joint:
        per_example = _per_example_scores(models, score, loss)
        return jestcore.independent_select(per_example, n, **randomness), per_example
    if plan.kind == "scores":
        idx = jestcore.joint_select(models["scores"], n, n_chunks=n_chunks, **randomness)
    else:
        idx = jestcore.joint_select_embeddings(
            models.get("learner"), models.get("reference"), n, score=score, loss=loss,
            n_chunks=n_chunks, block_size=block_size, **randomness,
        )  # fmt: skip
    return idx, _per_example_scores(models, score, loss)


def _stats(per_example: torch.Tensor, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "score_selected": torch.mean(per_example.index_select(0, idx.to(per_example.device))),
        "score_all": torch.mean(per_example),
    }


def select_batch(
    batch: Any,
    /,
    learner: Any = None,
    reference: Any = None,
    *,
    scores: Any = None,
    learner_model: Any = None,
    reference_model: Any = None,
    batch_size: int | None = None,
    filter_ratio: float | None = None,
    n_chunks: int = 16,
    score: str = "learnability",
    loss: str = "sigmoid",
    method: str = "joint",
    gain: float = 100.0,
    seed: Any = None,
    noise: Any = None,
    greedy: bool = False,
    scope: str = "local",
    exchange: str = "padded",
    group: Any = None,
    block_size: int | None = None,
) -> SelectedBatch:
    """Selects a sub-batch of ``batch`` to train on, from the learner's and reference's outputs.

    Every argument is checked once, before any work: a wrong type, dimension, size or option
    raises a ``TypeError`` or ``ValueError`` naming the argument and what was expected, and a
    NaN or infinity in the outputs raises a ``ValueError`` naming the argument and the first bad
    position (e.g. ``learner.image[3, 1] is nan``). The adapter checks the batch, the sizes and
    its options; the outputs, seed and noise are checked by the spec's selection that receives
    them (:func:`jestcore.joint_select_embeddings`, :func:`jestcore.joint_select` or
    :func:`jestcore.independent_select`). Values are not read where they cannot be (meta
    tensors, under ``torch.compile``): there non-finite candidates rank after every finite one.

    The number selected is :func:`jestcore.sub_batch_size`: ``batch_size``, or
    ``round(N * (1 - filter_ratio))`` (halves up, at least one), so a short last super-batch of
    a data loader still trains. ``n_chunks`` is capped at the number selected (a super-batch
    of 9 at ``filter_ratio=0.8`` keeps 2, in 2 chunks of one).

    With ``scope="global"`` on several ranks, each rank checks its own inputs in full (with the
    spec's validators), then all ranks exchange a small status (one all-gather): if any rank's
    inputs were refused, every rank raises the same error, naming the rank and its message; if
    the ranks disagree on anything that decides the selection (sizes, options, seed, scale and
    bias, the batch's layout), every rank raises a ``ValueError`` naming what differs. Only
    then do the collectives run, so a bad input on one rank never leaves the others waiting.
    (The spec then checks the gathered outputs again, as it checks every input it receives:
    a global step reads each tensor's finiteness twice, once per rank before the exchange and
    once after.)

    Args:
        batch: The super-batch: a tensor whose first dimension indexes the N examples, or any
            nesting of tuples, lists, dicts and dataclasses of such tensors (NumPy arrays and
            lists of strings are taken along too, which synchronises once).
        learner: The learner's outputs on ``batch``: :class:`~jestcore.PairEmbeddings`
            (contrastive) or an ``(N,)`` tensor of per-example losses. Not needed for
            ``score="easy_reference"``. A contrastive model's own output is converted by
            :func:`~jestcore.adapters.torch.pair_embeddings`: an open_clip tuple or
            ``output_dict=True`` dict as given, a Hugging Face ``SiglipOutput`` /
            ``CLIPOutput`` with ``learner_model`` (HF keeps the temperature on the model).
        reference: The reference model's outputs, of the same kind (e.g. from an
            :class:`~jestcore.adapters.torch.EmbeddingCache`). Not needed for
            ``score="hard_learner"``.
        scores: Instead of ``learner``/``reference``: an ``(N, N)`` score matrix (joint
            selection) or ``(N,)`` per-example scores (independent selection).
        learner_model: The Hugging Face model that produced ``learner`` when it is an HF
            output: ``scale = exp(learner_model.logit_scale)``, ``bias =
            learner_model.logit_bias`` (0 for CLIP). Not used for other outputs.
        reference_model: The same for ``reference``.
        batch_size: How many examples to select (per rank), or
        filter_ratio: The fraction to discard: ``round(N * (1 - filter_ratio))`` are kept
            (per rank, halves up, at least one); the paper's 0.8 keeps one in five.
        n_chunks: Chunks of joint selection (the paper uses 16); capped at the number
            selected.
        score: ``"learnability"``, ``"hard_learner"`` or ``"easy_reference"``.
        loss: The contrastive loss that embeddings are scored under: ``"sigmoid"`` (SigLIP,
            the default) or ``"softmax"`` (CLIP / InfoNCE, the paper's Algorithm 3; the bias
            is left out, as it cancels); see :func:`jestcore.joint_select_embeddings`. With
            ``method="independent"`` a softmax per-example score is the first chunk's logit,
            ``-scale * <image_i, text_i>`` per model. Checked always, used only with
            embeddings (per-example losses and scores are given as they are).
        method: ``"joint"`` or ``"independent"`` (per-example scores only, the baseline).
            Per-example losses and 1-D scores always select independently, which is exact.
        gain: The score gain of the sampling: each chunk takes the top-k of
            ``gain * logit + noise`` (default 100.0, the paper's recipe; 1.0 is Algorithm 1 as
            printed, larger is closer to greedy); see :func:`jestcore.joint_select`.
        seed: Seed of jestcore's portable generator: an int in ``[0, 2**32)`` (NumPy integers
            too) or a 0-d integer tensor (derive per-step seeds with
            :func:`jestcore.fold_in`). With ``scope="local"`` and several ranks the rank is
            folded in, so ranks draw different noise; with ``"global"`` every rank must pass
            the same seed.
        noise: Explicit Gumbel noise ``(n_chunks, N_total)`` instead of ``seed`` (``n_chunks``
            after the cap; ``(N_total,)`` for independent selection).
        greedy: Deterministic top-k instead of sampling.
        scope: ``"local"`` (each rank selects from its own super-batch) or ``"global"`` (one
            selection over all ranks' super-batches; each rank gets its share). Every rank must
            call with the same scope.
        exchange: With ``scope="global"``: ``"padded"`` or ``"exact"``; see
            :func:`~jestcore.adapters.torch.distributed.exchange_selected`.
        group: The ``torch.distributed`` process group (default: the world).
        block_size: Row block of joint selection from embeddings (bounds its temporaries).

    Returns:
        A :class:`SelectedBatch` ``(batch, indices, stats)``.

    Raises:
        TypeError: If an input has the wrong type.
        ValueError: If sizes disagree, an option is out of range or an output is not finite;
            with ``scope="global"``, on every rank when any rank's inputs are refused (a
            ``TypeError`` there is raised as a ``TypeError`` on every rank) or the ranks
            disagree.

    Warns:
        NotNormalizedWarning: If a converted open_clip or HF output's embeddings are not unit-norm
            (see :func:`~jestcore.adapters.torch.pair_embeddings`).

    Example:
        >>> import torch
        >>> x = torch.arange(10.0)[:, None]
        >>> losses = torch.tensor([0.0, 5, 0, 0, 9, 0, 0, 0, 0, 7])
        >>> sub = select_batch(x, losses, batch_size=3, score="hard_learner", greedy=True)
        >>> sub.indices.tolist(), sub.batch[:, 0].tolist()
        ([4, 9, 1], [4.0, 9.0, 1.0])
    """
    _check_choice("scope", scope, SCOPES)
    rank, world = dist_.rank_and_world(group)
    is_global = scope == "global" and world > 1
    seed = _as_seed(seed)
    randomness = {"seed": seed, "noise": noise, "greedy": greedy, "gain": gain}
    options = {
        "batch_size": batch_size, "filter_ratio": filter_ratio, "n_chunks": n_chunks,
        "score": score, "loss": loss, "method": method, "exchange": exchange,
        "block_size": block_size, "hf_models": (learner_model, reference_model),
        **randomness,
    }  # fmt: skip
    if not is_global:
        plan = _plan(batch, learner, reference, scores, world=1, is_global=False, **options)
        if scope == "local" and world > 1 and seed is not None:
            randomness["seed"] = jestcore.fold_in(seed, rank)
        idx, per_example = _select(plan, plan.models, score, loss, block_size, **randomness)
        return SelectedBatch(take_rows(batch, idx), idx, _stats(per_example, idx))
    values, error = None, None
    try:
        plan = _plan(batch, learner, reference, scores, world=world, is_global=True, **options)
        values = _agreement(
            plan, batch, world, score=score, loss=loss, method=method, exchange=exchange,
            seed=seed, noise=noise, gain=gain,
        )  # fmt: skip
    except Exception as e:  # every rank takes part in the status exchange, then all raise
        error = e
    dist_.agree(AGREEMENT, values, error, group)
    models = _gathered(plan.models, group)
    global_idx, per_example = _select(plan, models, score, loss, block_size, **randomness)
    global_idx = dist_.broadcast_selection(global_idx, group)
    sub = dist_.exchange_unchecked(batch, global_idx, plan.n_local, exchange, group)
    mine = dist_.shares(global_idx, world)[rank]
    return SelectedBatch(sub, mine, _stats(per_example, global_idx))


class JESTSelector:
    """Selection for a training loop: config, per-step seeds, warm-up, resumable state.

    At each call the step counter ``t`` gives the seed ``fold_in(seed, t)`` (with
    ``scope="local"`` on several ranks, the rank is folded in too), so a run resumed from
    :meth:`state_dict` selects exactly what the uninterrupted run would have.

    Args:
        batch_size: Examples to train on per step (per rank), or
        filter_ratio: the fraction of each super-batch to discard (0.8 in the paper); each
            step keeps :func:`jestcore.sub_batch_size` examples, ``round(N * (1 -
            filter_ratio))`` (halves up, at least one), so the short last super-batch of a
            data loader trains too.
        n_chunks: Chunks of joint selection (16 in the paper); a step that selects fewer
            examples uses one chunk per example.
        score: ``"learnability"``, ``"hard_learner"`` or ``"easy_reference"``.
        loss: ``"sigmoid"`` or ``"softmax"``: the contrastive loss embeddings are scored under
            (see :func:`select_batch`); saved in :attr:`config`.
        method: ``"joint"`` or ``"independent"``.
        gain: The score gain of the sampling (default 100.0, the paper's recipe; 1.0 is
            Algorithm 1 as printed); saved in :attr:`config`.
        seed: Base seed, an int in ``[0, 2**32)`` (NumPy integers too; kept as a Python
            int).
        scope: ``"local"`` or ``"global"`` (see :func:`select_batch`).
        warmup_steps: For the first this many steps select uniformly at random (no scores
            needed; see :attr:`needs_scores`).
        exchange: ``"padded"`` or ``"exact"`` for ``scope="global"``.
        group: The ``torch.distributed`` process group.
        block_size: Row block of the streaming selection.

    Example:
        >>> import torch
        >>> selector = JESTSelector(batch_size=2, score="hard_learner", seed=0)
        >>> sub = selector(torch.arange(8), torch.linspace(0, 1, 8))
        >>> sub.batch.shape, selector.step
        (torch.Size([2]), 1)
    """

    def __init__(
        self,
        *,
        batch_size: int | None = None,
        filter_ratio: float | None = None,
        n_chunks: int = 16,
        score: str = "learnability",
        loss: str = "sigmoid",
        method: str = "joint",
        gain: float = 100.0,
        seed: int = 0,
        scope: str = "local",
        warmup_steps: int = 0,
        exchange: str = "padded",
        group: Any = None,
        block_size: int | None = None,
    ) -> None:
        if (batch_size is None) == (filter_ratio is None):
            raise ValueError(
                "give exactly one of batch_size=... or filter_ratio=..., got "
                f"batch_size={batch_size!r}, filter_ratio={filter_ratio!r}"
            )
        if batch_size is not None:
            batch_size = v.check_int("batch_size", batch_size, low=1)
        else:
            filter_ratio = v.check_ratio("filter_ratio", filter_ratio)
        n_chunks = v.check_int("n_chunks", n_chunks, low=1)
        _check_choice("score", score, tuple(sorted(SCORES)))
        loss = check_loss(loss)
        _check_choice("method", method, METHODS)
        gain = v.check_gain(gain)
        _check_choice("scope", scope, SCOPES)
        _check_choice("exchange", exchange, dist_.EXCHANGES)
        seed = _check_base_seed("seed", seed)
        warmup_steps = v.check_int("warmup_steps", warmup_steps, low=0)
        if block_size is not None:
            block_size = v.check_int("block_size", block_size, low=1)
        self.batch_size, self.filter_ratio = batch_size, filter_ratio
        self.n_chunks, self.score, self.method, self.gain = n_chunks, score, method, gain
        self.loss = loss
        self.seed, self.scope, self.warmup_steps = seed, scope, warmup_steps
        self.exchange, self.group, self.block_size = exchange, group, block_size
        self.step = 0
        self.last_stats: dict[str, torch.Tensor] = {}

    @property
    def config(self) -> dict[str, Any]:
        """The options that decide what is selected (saved in :meth:`state_dict`)."""
        return {
            "batch_size": self.batch_size,
            "filter_ratio": self.filter_ratio,
            "n_chunks": self.n_chunks,
            "score": self.score,
            "loss": self.loss,
            "method": self.method,
            "gain": self.gain,
            "scope": self.scope,
            "warmup_steps": self.warmup_steps,
        }

    @property
    def in_warmup(self) -> bool:
        """Whether the next call selects uniformly (a warm-up step)."""
        return self.step < self.warmup_steps

    @property
    def needs_scores(self) -> bool:
        """Whether the next call needs the models' outputs (False during warm-up)."""
        return not self.in_warmup

    @property
    def needs_learner(self) -> bool:
        """Whether the next call needs the learner's outputs (not for easy-reference)."""
        return self.needs_scores and self.score != "easy_reference"

    @property
    def needs_reference(self) -> bool:
        """Whether the next call needs the reference's outputs (not for hard-learner)."""
        return self.needs_scores and self.score != "hard_learner"

    def step_seed(self, step: int | None = None) -> int:
        """The seed of ``step`` (default: the next one), before any rank is folded in."""
        return jestcore.fold_in(self.seed, self.step if step is None else step)

    def select(
        self,
        batch: Any,
        /,
        learner: Any = None,
        reference: Any = None,
        *,
        scores: Any = None,
        learner_model: Any = None,
        reference_model: Any = None,
    ) -> SelectedBatch:
        """Selects this step's sub-batch and advances the step counter.

        Args:
            batch: The super-batch (see :func:`select_batch`).
            learner: The learner's outputs on it (ignored during warm-up).
            reference: The reference's outputs on it (ignored during warm-up).
            scores: Precomputed scores instead of ``learner``/``reference``.
            learner_model: The Hugging Face model that produced ``learner``, when it is an HF
                ``SiglipOutput`` / ``CLIPOutput`` (see :func:`select_batch`).
            reference_model: The same for ``reference``.

        Returns:
            A :class:`SelectedBatch`; its ``stats`` are also kept in :attr:`last_stats`.
        """
        common = {
            "batch_size": self.batch_size,
            "filter_ratio": self.filter_ratio,
            "seed": self.step_seed(),
            "scope": self.scope,
            "exchange": self.exchange,
            "group": self.group,
        }
        if self.in_warmup:
            n = batch_size_of(batch)
            device = _first_device(batch)
            uniform = torch.zeros(n, dtype=torch.float32, device=device)
            result = select_batch(batch, scores=uniform, **common)._replace(stats={})
        else:
            result = select_batch(
                batch,
                learner,
                reference,
                scores=scores,
                learner_model=learner_model,
                reference_model=reference_model,
                n_chunks=self.n_chunks,
                score=self.score,
                loss=self.loss,
                method=self.method,
                gain=self.gain,
                block_size=self.block_size,
                **common,
            )
        self.step += 1
        self.last_stats = result.stats
        return result

    __call__ = select

    def state_dict(self) -> dict[str, Any]:
        """The step counter, seed and config: all that decides future selections.

        Plain data only (ints, floats, strings, ``None``), so a checkpoint that holds it loads
        with ``torch.load(path, weights_only=True)``, which never unpickles arbitrary objects.
        """
        return {"step": self.step, "seed": self.seed, "config": self.config}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`; refuses a state saved with a different config.

        A state saved before selectors recorded ``gain`` selected at gain 1 (Algorithm 1 as
        printed): it restores into a selector with ``gain=1.0`` only; one saved before they
        recorded ``loss`` selected under the sigmoid loss, and restores with
        ``loss="sigmoid"`` only.

        Raises:
            TypeError: If the saved step or seed is not an int.
            ValueError: If ``state`` is malformed or its config differs from this selector's.
        """
        if not isinstance(state, Mapping) or not {"step", "seed", "config"} <= set(state):
            raise ValueError(
                "state must be a dict from JESTSelector.state_dict() with keys 'step', 'seed' "
                f"and 'config', got {type(state).__name__}"
                + (f" with keys {sorted(map(str, state))}" if isinstance(state, Mapping) else "")
            )
        config = state["config"]
        if not isinstance(config, Mapping):
            raise ValueError(f"state['config'] must be a dict, got {type(config).__name__}")
        # States saved before the gain existed selected at gain 1 (Algorithm 1 as printed),
        # and those saved before the loss option under the sigmoid loss.
        config = {"gain": 1.0, "loss": "sigmoid", **config}
        diff = {k: (config.get(k), v) for k, v in self.config.items() if config.get(k) != v}
        if diff:
            raise ValueError(
                "state was saved by a selector with a different config (saved, current): "
                + ", ".join(f"{k}={a!r}, {b!r}" for k, (a, b) in diff.items())
            )
        step = v.check_int("state['step']", state["step"], low=0)
        self.step, self.seed = step, _check_base_seed("state['seed']", state["seed"])

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if v is not None)
        return f"JESTSelector({opts}, seed={self.seed}, step={self.step})"


def _check_base_seed(name: str, seed: Any) -> int:
    """A selector's base seed as a Python int (so its state is plain data)."""
    return v.check_int(name, seed, low=0, high=2**32 - 1, high_doc="2**32 - 1")


def _first_device(batch: Any) -> torch.device:
    for _, leaf in leaves(batch):
        if isinstance(leaf, torch.Tensor):
            return leaf.device
    return torch.device("cpu")
