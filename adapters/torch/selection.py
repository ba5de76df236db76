"""JEST in a PyTorch training loop: :func:`select_batch` (one call) and :class:`JESTSelector`.

What drives the selection is given as the learner's and the reference model's outputs on the
super-batch:

* :class:`~jestcore.PairEmbeddings` (image and text embeddings with the sigmoid loss' scale and
  bias) for contrastive models: joint selection from embeddings, exact and O(N * b * d)
  (``method="independent"`` gives the per-example baseline on the matching-pair losses);
* or 1-D per-example losses (classification, language modelling): the batch loss is a sum of
  per-example terms, so independent selection is the exact answer;
* or precomputed ``scores``: an ``(N, N)`` matrix (joint) or an ``(N,)`` vector (independent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from jestcore.adapters.torch import distributed as dist_
from jestcore.adapters.torch.trees import batch_size_of, leaves, take_batch
from jestcore.backends.torch import is_lazy

import jestcore

__all__ = ["METHODS", "SCOPES", "JESTSelector", "SelectedBatch", "select_batch"]

#: Selection methods: joint (Algorithm 1) or independent (per-example scores).
METHODS = ("joint", "independent")
#: Distributed scopes; see :mod:`jestcore.adapters.torch.distributed`.
SCOPES = ("local", "global")


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


def _is_pair(x: Any) -> bool:
    return isinstance(x, tuple) and len(x) == 4 and not isinstance(x, torch.Tensor)


def _check_int(name: str, value: Any, *, low: int, high: int | None = None, doc: str = "") -> int:
    """``value`` as an int in ``[low, high]``; bools, floats and others are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {doc or high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _floating(name: str, x: Any, ndim: int, shape_doc: str) -> torch.Tensor:
    """``x`` detached, after checking it is a real floating tensor with ``ndim`` dimensions."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape_doc}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {shape_doc}, got shape {tuple(x.shape)}")
    return x.detach()


def _scalar(name: str, x: Any) -> Any:
    """A scale or bias: a finite Python number or a 0-d floating tensor (detached)."""
    if isinstance(x, torch.Tensor):
        if x.ndim != 0 or not x.is_floating_point():
            raise TypeError(
                f"{name} must be a float or a 0-d floating tensor, got a tensor of shape "
                f"{tuple(x.shape)} and dtype {x.dtype}"
            )
        return x.detach()
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise TypeError(f"{name} must be a float or a 0-d floating tensor, got {x!r}")
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    return x


def _check_pair(name: str, m: Any) -> jestcore.PairEmbeddings:
    p = jestcore.PairEmbeddings(*m)
    image = _floating(f"{name}.image", p.image, 2, "(N, d)")
    text = _floating(f"{name}.text", p.text, 2, "(N, d)")
    if image.shape != text.shape:
        raise ValueError(
            f"{name}.image and {name}.text must have the same shape (N, d), got "
            f"{tuple(image.shape)} and {tuple(text.shape)}"
        )
    return jestcore.PairEmbeddings(
        image, text, _scalar(f"{name}.scale", p.scale), _scalar(f"{name}.bias", p.bias)
    )


def _check_models(
    learner: Any, reference: Any, scores: Any, score: str
) -> tuple[Any, Any, Any, str]:
    """Validated (detached) inputs and their kind: ``"embeddings"``, ``"losses"`` or ``"scores"``.

    Static checks only (types, dtypes, shapes); values and devices are checked later.
    """
    _check_choice("score", score, tuple(sorted(jestcore.streaming.SCORES)))
    if scores is not None:
        if learner is not None or reference is not None:
            raise ValueError("give either scores=... or learner/reference outputs, not both")
        if not isinstance(scores, torch.Tensor) or scores.ndim not in (1, 2):
            raise TypeError(
                "scores must be a 1-D (N,) or 2-D (N, N) tensor, got "
                + (
                    f"a tensor of shape {tuple(scores.shape)}"
                    if isinstance(scores, torch.Tensor)
                    else type(scores).__name__
                )
            )
        doc = "(N,) or (N, N)"
        scores = _floating("scores", scores, scores.ndim, doc)
        if scores.ndim == 2 and scores.shape[0] != scores.shape[1]:
            raise ValueError(f"scores must be {doc}, got shape {tuple(scores.shape)}")
        return None, None, scores, "scores"
    needs = dict(zip(("learner", "reference"), jestcore.streaming.SCORES[score], strict=True))
    models: dict[str, Any] = {}
    for name, m in (("learner", learner), ("reference", reference)):
        if not needs[name]:
            models[name] = None
            continue
        if m is None:
            raise ValueError(f'score="{score}" needs the {name}\'s outputs, got {name}=None')
        if _is_pair(m):
            models[name] = _check_pair(name, m)
        elif isinstance(m, torch.Tensor) and m.ndim == 1:
            models[name] = _floating(name, m, 1, "(N,) of per-example losses")
        else:
            raise TypeError(
                f"{name} must be a PairEmbeddings(image, text, scale, bias) or a 1-D tensor of "
                f"per-example losses, got {type(m).__name__}"
                + (f" of shape {tuple(m.shape)}" if isinstance(m, torch.Tensor) else "")
            )
    present = {k: m for k, m in models.items() if m is not None}
    kinds = {isinstance(m, jestcore.PairEmbeddings) for m in present.values()}
    if len(kinds) > 1:
        raise TypeError("learner and reference must both be PairEmbeddings or both be losses")
    if len(present) == 2 and len({_n_examples(m) for m in present.values()}) > 1:
        raise ValueError(
            "learner and reference must describe the same N examples, got "
            f"N = {_n_examples(present['learner'])} and {_n_examples(present['reference'])}"
        )
    kind = "embeddings" if kinds == {True} else "losses"
    return models["learner"], models["reference"], None, kind


def _tensors(learner: Any, reference: Any, scores: Any) -> dict[str, torch.Tensor]:
    """Every tensor of the models' outputs (scale and bias included), by argument name."""
    out: dict[str, torch.Tensor] = {}
    for name, m in (("learner", learner), ("reference", reference), ("scores", scores)):
        if isinstance(m, jestcore.PairEmbeddings):
            out.update({f"{name}.{f}": getattr(m, f) for f in m._fields})
        elif m is not None:
            out[name] = m
    return {k: t for k, t in out.items() if isinstance(t, torch.Tensor)}


def _same_device(tensors: dict[str, torch.Tensor]) -> torch.device:
    (first, t0), *rest = tensors.items()
    for name, t in rest:
        if t.device != t0.device:
            raise ValueError(
                f"{name} is on device {t.device} but {first} is on {t0.device}: move them together"
            )
    return t0.device


def _first_non_finite(name: str, x: torch.Tensor) -> str | None:
    """``"name[i, j] is nan"`` for the first non-finite entry of ``x`` (row-major), or None."""
    bad = ~torch.isfinite(x.reshape(-1))
    if not bool(bad.any()):
        return None
    flat = int(torch.argmax(bad.to(torch.int8)))
    value = float(x.reshape(-1)[flat])
    where = []
    for size in reversed(tuple(x.shape)):
        where.append(flat % size)
        flat //= size
    return f"{name}[{', '.join(map(str, reversed(where)))}] is {value}"


def _check_finite(tensors: dict[str, torch.Tensor]) -> None:
    """Raises naming the first NaN or infinite entry; one host synchronisation when all is well.

    Skipped for tensors whose values cannot be read (meta tensors, under ``torch.compile``):
    there, non-finite candidates rank after every finite one (see :func:`select_batch`).
    """
    eager = {k: t for k, t in tensors.items() if not is_lazy(t)}
    if not eager:
        return
    # A NaN or an infinity makes a sum non-finite, so finite sums prove every entry finite;
    # a non-finite sum (possibly mere overflow) falls back to the exact search.
    sums = torch.stack(
        [t.sum(dtype=torch.promote_types(t.dtype, torch.float32)).float() for t in eager.values()]
    )
    if bool(torch.isfinite(sums).all()):
        return
    for name, t in eager.items():
        found = _first_non_finite(name, t)
        if found is not None:
            raise ValueError(f"{name} must be finite, but {found}")


def _check_seed(seed: Any) -> None:
    expected = "seed must be a Python int in [0, 2**32) or a 0-d integer tensor"
    if isinstance(seed, torch.Tensor):
        if (
            seed.ndim != 0
            or seed.is_floating_point()
            or seed.is_complex()
            or (seed.dtype == torch.bool)
        ):
            raise TypeError(
                f"{expected}, got a tensor of shape {tuple(seed.shape)} and dtype {seed.dtype}"
            )
        return
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{expected}, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"{expected}, got {seed}")


class _Plan(NamedTuple):
    """A validated selection: what every rank computes (``scope="global"``) or this rank does."""

    learner: Any
    reference: Any
    scores: Any
    kind: str
    n_local: int
    n_per_rank: int
    joint: bool
    seed: Any
    noise: Any
    greedy: bool
    block_size: int | None


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
    method: Any,
    seed: Any,
    noise: Any,
    greedy: Any,
    exchange: Any,
    block_size: Any,
    world: int,
    is_global: bool,
) -> _Plan:
    """Every check of :func:`select_batch`'s arguments, on this rank's inputs, before any work."""
    _check_choice("method", method, METHODS)
    _check_choice("exchange", exchange, dist_.EXCHANGES)
    n_local = batch_size_of(batch)
    if n_local == 0:
        raise ValueError("batch must hold at least one example, got an empty super-batch (N = 0)")
    learner, reference, scores, kind = _check_models(learner, reference, scores, score)
    for name, m in (("learner", learner), ("reference", reference), ("scores", scores)):
        if m is not None and _n_examples(m) != n_local:
            raise ValueError(
                f"{name} has outputs for {_n_examples(m)} examples but the batch has {n_local}"
            )
    n_per_rank = _n_select(n_local, batch_size, filter_ratio)
    n_select, n_total = n_per_rank * world, n_local * world
    joint = method == "joint" and (kind == "embeddings" or (kind == "scores" and scores.ndim == 2))
    chunks_doc = f"the number of examples selected ({n_select})"
    n_chunks = _check_int(
        "n_chunks", n_chunks, low=1, high=n_select if joint else None, doc=chunks_doc
    )
    if block_size is not None:
        _check_int("block_size", block_size, low=1)
    if not isinstance(greedy, bool):
        raise TypeError(f"greedy must be a bool, got {greedy!r}")
    given = [n for n, v in (("seed", seed), ("noise", noise)) if v is not None]
    given += ["greedy=True"] if greedy else []
    if len(given) != 1:
        raise ValueError(
            "give exactly one source of randomness: seed=..., noise=... or greedy=True; got "
            + (", ".join(given) if given else "none")
        )
    tensors = _tensors(learner, reference, scores)
    if seed is not None:
        _check_seed(seed)
        if isinstance(seed, torch.Tensor):
            tensors["seed"] = seed
    if noise is not None:
        shape = (n_chunks, n_total) if joint else (n_total,)
        doc = f"of shape {shape}" + (" (N of all ranks together)" if is_global else "")
        noise = _floating("noise", noise, len(shape), doc)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must be {doc}, got shape {tuple(noise.shape)}")
        tensors["noise"] = noise
    _same_device(tensors)
    if is_global:
        if kind == "scores" and scores.ndim == 2:
            raise ValueError(
                'scope="global" cannot gather a score matrix (its off-diagonal blocks pair '
                "examples of different ranks): pass learner/reference embeddings instead"
            )
        for path, leaf in leaves(batch):
            if not isinstance(leaf, torch.Tensor):
                raise TypeError(
                    'scope="global" exchanges examples between ranks, so every leaf of the batch '
                    f"must be a tensor; {path} is a {type(leaf).__name__}"
                )
    _check_finite({k: t for k, t in tensors.items() if k != "seed"})
    return _Plan(
        learner, reference, scores, kind, n_local, n_per_rank, joint, seed, noise, greedy,
        block_size,
    )  # fmt: skip


#: What every rank of a global selection must agree on: (what is needed, how to show it).
AGREEMENT = (
    ("a super-batch of the same size", "int"),
    ("the same number of examples selected per rank", "int"),
    ("the same n_chunks", "int"),
    ("the same score", ("easy_reference", "hard_learner", "learnability")),
    ("the same method", METHODS),
    ("the same exchange", dist_.EXCHANGES),
    ("the same kind of outputs", ("embeddings", "losses", "scores")),
    ("the same source of randomness", ("seed", "noise", "greedy")),
    ("the same seed", "int"),
    ("the same learner.scale", "float"),
    ("the same learner.bias", "float"),
    ("the same reference.scale", "float"),
    ("the same reference.bias", "float"),
    ("the same dtypes and widths of the outputs (and noise shape)", "hash"),
    ("the same batch structure, dtypes and shapes past the first dimension", "hash"),
)


def _layout(x: Any) -> list[Any]:
    """Per-tensor (path, dtype, trailing shape) of a batch or of model outputs, for hashing."""
    out: list[Any] = []
    for path, leaf in leaves(x):
        if isinstance(leaf, torch.Tensor):
            out.append((path, str(leaf.dtype), tuple(leaf.shape[1:])))
        else:
            out.append((path, type(leaf).__name__))
    return out


def _agreement(
    plan: _Plan, batch: Any, *, n_chunks: int, score: str, method: str, exchange: str
) -> list[Any]:
    """The values of :data:`AGREEMENT` for this rank (ints, floats or 0-d tensors)."""
    kinds = ("embeddings", "losses", "scores")
    randomness = 0 if plan.seed is not None else 1 if plan.noise is not None else 2
    seed = -1 if plan.seed is None else plan.seed
    pairs = [m if isinstance(m, jestcore.PairEmbeddings) else None for m in plan[:2]]
    scalars = [getattr(p, f) if p is not None else 0.0 for p in pairs for f in ("scale", "bias")]
    outputs = [
        [(f, str(t.dtype), tuple(t.shape[1:])) for f, t in _tensors(*plan[:3]).items() if t.ndim],
        None if plan.noise is None else tuple(plan.noise.shape),
    ]
    return [
        plan.n_local,
        plan.n_per_rank,
        n_chunks if plan.joint else 0,
        AGREEMENT[3][1].index(score),
        METHODS.index(method),
        dist_.EXCHANGES.index(exchange),
        kinds.index(plan.kind),
        randomness,
        seed,
        *scalars,
        dist_.stable_hash(outputs),
        dist_.stable_hash(_layout(batch)),
    ]


def _gather_models(plan: _Plan, group: Any) -> tuple[Any, Any, Any]:
    """Every rank's outputs, concatenated in rank order (scale and bias are shared)."""

    def gather(m: Any) -> Any:
        if m is None:
            return None
        if isinstance(m, jestcore.PairEmbeddings):
            return m._replace(
                image=dist_.all_gather_rows(m.image, group),
                text=dist_.all_gather_rows(m.text, group),
            )
        return dist_.all_gather_rows(m, group)

    return gather(plan.learner), gather(plan.reference), gather(plan.scores)


def _pair_losses(p: jestcore.PairEmbeddings) -> torch.Tensor:
    """Matching-pair losses ``softplus(-(scale * <image_i, text_i> + bias))``, in float32+."""
    dtype = torch.promote_types(torch.promote_types(p.image.dtype, p.text.dtype), torch.float32)
    logits = torch.sum(p.image.to(dtype) * p.text.to(dtype), dim=1)
    return torch.nn.functional.softplus(-(p.scale * logits + p.bias))


def _per_example_scores(learner: Any, reference: Any, score: str) -> torch.Tensor:
    """Per-example scores from per-example losses or from embeddings' matching pairs."""
    losses = [
        _pair_losses(m) if isinstance(m, jestcore.PairEmbeddings) else m
        for m in (learner, reference)
    ]
    if score == "learnability":
        return jestcore.learnability(losses[0], losses[1])
    if score == "hard_learner":
        return jestcore.hard_learner(losses[0])
    return jestcore.easy_reference(losses[1])


def _n_examples(x: Any) -> int:
    """The number of examples that ``x`` (embeddings, losses or scores) describes."""
    return int((x.image if isinstance(x, jestcore.PairEmbeddings) else x).shape[0])


def _n_select(n: int, batch_size: int | None, filter_ratio: float | None) -> int:
    """The number of examples to select from ``n``: ``batch_size``, or ``floor(n * (1 - f))``."""
    if (batch_size is None) == (filter_ratio is None):
        raise ValueError(
            "give exactly one of batch_size=... (examples to train on) or filter_ratio=... "
            f"(fraction to discard), got batch_size={batch_size!r}, filter_ratio={filter_ratio!r}"
        )
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an int, got {batch_size!r}")
        if not 1 <= batch_size <= n:
            raise ValueError(
                f"batch_size must be between 1 and the super-batch size {n}, got {batch_size}"
            )
        return batch_size
    if isinstance(filter_ratio, bool) or not isinstance(filter_ratio, int | float):
        raise TypeError(f"filter_ratio must be a float in [0, 1), got {filter_ratio!r}")
    if not 0 <= filter_ratio < 1:
        raise ValueError(f"filter_ratio must be in [0, 1), got {filter_ratio}")
    k = math.floor(n * (1 - filter_ratio) + 1e-9)
    if k < 1:
        raise ValueError(
            f"filter_ratio={filter_ratio} keeps no example of a super-batch of {n}: "
            "lower it or draw a larger super-batch"
        )
    return k


def _select_indices(
    learner: Any,
    reference: Any,
    scores: Any,
    plan: _Plan,
    seed: Any,
    *,
    world: int,
    n_chunks: int,
    score: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selected indices and the per-example scores they were drawn from (for stats)."""
    rand = {"seed": seed, "noise": plan.noise, "greedy": plan.greedy}
    n_select = plan.n_per_rank * world
    if plan.kind == "scores":
        if scores.ndim == 1:
            return jestcore.independent_select(scores, n_select, **rand), scores
        diag = torch.diagonal(scores)
        if not plan.joint:
            return jestcore.independent_select(diag, n_select, **rand), diag
        return jestcore.joint_select(scores, n_select, n_chunks=n_chunks, **rand), diag
    per_example = _per_example_scores(learner, reference, score)
    if not plan.joint:
        return jestcore.independent_select(per_example, n_select, **rand), per_example
    idx = jestcore.joint_select_embeddings(
        learner, reference, n_select, n_chunks=n_chunks, score=score,
        block_size=plan.block_size, **rand,
    )  # fmt: skip
    return idx, per_example


def _stats(per_example: torch.Tensor, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    per_example = per_example.detach()
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
    batch_size: int | None = None,
    filter_ratio: float | None = None,
    n_chunks: int = 16,
    score: str = "learnability",
    method: str = "joint",
    seed: Any = None,
    noise: Any = None,
    greedy: bool = False,
    scope: str = "local",
    exchange: str = "padded",
    group: Any = None,
    block_size: int | None = None,
) -> SelectedBatch:
    """Selects a sub-batch of ``batch`` to train on, from the learner's and reference's outputs.

    Every argument is checked before any work: a wrong type, dimension, size or option raises a
    ``TypeError`` or ``ValueError`` naming the argument and what was expected, and a NaN or
    infinity in the outputs raises a ``ValueError`` naming the argument and the first bad
    position (e.g. ``learner.image[3, 1] is nan``). Values are not read where they cannot be
    (meta tensors, under ``torch.compile``): there non-finite candidates rank after every finite
    one.

    With ``scope="global"`` on several ranks, each rank checks its own inputs, then all ranks
    exchange a small status (one all-gather): if any rank's inputs were refused, every rank
    raises the same error, naming the rank and its message; if the ranks disagree on anything
    that decides the selection (sizes, options, seed, scale and bias, the batch's layout),
    every rank raises a ``ValueError`` naming what differs. Only then do the collectives run,
    so a bad input on one rank never leaves the others waiting.

    Args:
        batch: The super-batch: a tensor whose first dimension indexes the N examples, or any
            nesting of tuples, lists, dicts and dataclasses of such tensors (NumPy arrays and
            lists of strings are taken along too, which synchronises once).
        learner: The learner's outputs on ``batch``: :class:`~jestcore.PairEmbeddings`
            (contrastive) or an ``(N,)`` tensor of per-example losses. Not needed for
            ``score="easy_reference"``.
        reference: The reference model's outputs, of the same kind (e.g. from an
            :class:`~jestcore.adapters.torch.EmbeddingCache`). Not needed for
            ``score="hard_learner"``.
        scores: Instead of ``learner``/``reference``: an ``(N, N)`` score matrix (joint
            selection) or ``(N,)`` per-example scores (independent selection).
        batch_size: How many examples to select (per rank), or
        filter_ratio: The fraction to discard: ``floor(N * (1 - filter_ratio))`` are kept
            (per rank); the paper's 0.8 keeps one in five.
        n_chunks: Chunks of joint selection (the paper uses 16), at most the number selected.
        score: ``"learnability"``, ``"hard_learner"`` or ``"easy_reference"``.
        method: ``"joint"`` or ``"independent"`` (per-example scores only, the baseline).
            Per-example losses and 1-D scores always select independently, which is exact.
        seed: Seed of jestcore's portable generator (derive per-step seeds with
            :func:`jestcore.fold_in`). With ``scope="local"`` and several ranks the rank is
            folded in, so ranks draw different noise; with ``"global"`` every rank must pass
            the same seed.
        noise: Explicit Gumbel noise ``(n_chunks, N_total)`` instead of ``seed``.
        greedy: Deterministic top-k instead of sampling.
        scope: ``"local"`` (each rank selects from its own super-batch) or ``"global"`` (one
            selection over all ranks' super-batches; each rank gets its share). Every rank must
            call with the same scope.
        exchange: With ``scope="global"``: ``"padded"`` or ``"exact"``; see
            :func:`~jestcore.adapters.torch.distributed.exchange_selected`.
        group: The ``torch.distributed`` process group (default: the world).
        block_size: Row block of the streaming selection (bounds its temporaries).

    Returns:
        A :class:`SelectedBatch` ``(batch, indices, stats)``.

    Raises:
        TypeError: If an input has the wrong type.
        ValueError: If sizes disagree, an option is out of range or an output is not finite;
            with ``scope="global"``, on every rank when any rank's inputs are refused (a
            ``TypeError`` there is raised as a ``TypeError`` on every rank) or the ranks
            disagree.

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
    options = {
        "batch_size": batch_size, "filter_ratio": filter_ratio, "n_chunks": n_chunks,
        "score": score, "method": method, "seed": seed, "noise": noise, "greedy": greedy,
        "exchange": exchange, "block_size": block_size,
    }  # fmt: skip
    if not is_global:
        plan = _plan(batch, learner, reference, scores, world=1, is_global=False, **options)
        if scope == "local" and world > 1 and seed is not None:
            seed = jestcore.fold_in(seed, rank)
        idx, per_example = _select_indices(
            *plan[:3], plan, seed, world=1, n_chunks=n_chunks, score=score
        )
        return SelectedBatch(take_batch(batch, idx), idx, _stats(per_example, idx))
    values, error = None, None
    try:
        plan = _plan(batch, learner, reference, scores, world=world, is_global=True, **options)
        values = _agreement(
            plan, batch, n_chunks=n_chunks, score=score, method=method, exchange=exchange
        )
    except Exception as e:  # every rank takes part in the status exchange, then all raise
        error = e
    dist_.agree(AGREEMENT, values, error, group)
    learner, reference, scores = _gather_models(plan, group)
    global_idx, per_example = _select_indices(
        learner, reference, scores, plan, seed, world=world, n_chunks=n_chunks, score=score
    )
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
        filter_ratio: the fraction of each super-batch to discard (0.8 in the paper).
        n_chunks: Chunks of joint selection (16 in the paper).
        score: ``"learnability"``, ``"hard_learner"`` or ``"easy_reference"``.
        method: ``"joint"`` or ``"independent"``.
        seed: Base seed, an int in ``[0, 2**32)``.
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
        method: str = "joint",
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
            _check_int("batch_size", batch_size, low=1)
        else:
            _n_select(10**9, None, filter_ratio)
        _check_int("n_chunks", n_chunks, low=1)
        _check_choice("score", score, tuple(sorted(jestcore.streaming.SCORES)))
        _check_choice("method", method, METHODS)
        _check_choice("scope", scope, SCOPES)
        _check_choice("exchange", exchange, dist_.EXCHANGES)
        _check_selector_seed("seed", seed)
        _check_int("warmup_steps", warmup_steps, low=0)
        if block_size is not None:
            _check_int("block_size", block_size, low=1)
        self.batch_size, self.filter_ratio = batch_size, filter_ratio
        self.n_chunks, self.score, self.method = n_chunks, score, method
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
            "method": self.method,
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
        self, batch: Any, /, learner: Any = None, reference: Any = None, *, scores: Any = None
    ) -> SelectedBatch:
        """Selects this step's sub-batch and advances the step counter.

        Args:
            batch: The super-batch (see :func:`select_batch`).
            learner: The learner's outputs on it (ignored during warm-up).
            reference: The reference's outputs on it (ignored during warm-up).
            scores: Precomputed scores instead of ``learner``/``reference``.

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
                n_chunks=self.n_chunks,
                score=self.score,
                method=self.method,
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

        Raises:
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
        diff = {k: (config.get(k), v) for k, v in self.config.items() if config.get(k) != v}
        if diff:
            raise ValueError(
                "state was saved by a selector with a different config (saved, current): "
                + ", ".join(f"{k}={a!r}, {b!r}" for k, (a, b) in diff.items())
            )
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"state['step'] must be an int >= 0, got {step!r}")
        _check_selector_seed("state['seed']", state["seed"])
        self.step, self.seed = step, state["seed"]

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if v is not None)
        return f"JESTSelector({opts}, seed={self.seed}, step={self.step})"


def _check_selector_seed(name: str, seed: Any) -> None:
    """A selector's base seed: a Python int (so its state is plain data)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(
            f"{name} must be a Python int in [0, 2**32) (per-step seeds are derived from it on "
            f"the host), got {type(seed).__name__} {seed!r}"
        )
    if not 0 <= seed < 2**32:
        raise ValueError(f"{name} must be a Python int in [0, 2**32), got {seed}")


def _first_device(batch: Any) -> torch.device:
    for _, leaf in leaves(batch):
        if isinstance(leaf, torch.Tensor):
            return leaf.device
    return torch.device("cpu")
