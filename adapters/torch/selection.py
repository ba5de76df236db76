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


def _detach(x: Any) -> Any:
    return x.detach() if isinstance(x, torch.Tensor) else x


def _pair(x: Any) -> jestcore.PairEmbeddings:
    return jestcore.PairEmbeddings(*(_detach(v) for v in x))


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


def _check_models(learner: Any, reference: Any, scores: Any, score: str) -> tuple[Any, Any, str]:
    """Validated inputs and their kind: ``"embeddings"``, ``"losses"`` or ``"scores"``."""
    if score not in jestcore.streaming.SCORES:
        raise ValueError(f"score must be one of {sorted(jestcore.streaming.SCORES)}, got {score!r}")
    if scores is not None:
        if learner is not None or reference is not None:
            raise ValueError("give either scores=... or learner/reference outputs, not both")
        if not isinstance(scores, torch.Tensor) or scores.ndim not in (1, 2):
            raise TypeError(f"scores must be a 1-D or 2-D tensor, got {type(scores).__name__}")
        if scores.ndim == 2 and scores.shape[0] != scores.shape[1]:
            raise ValueError(f"scores must be (N,) or (N, N), got shape {tuple(scores.shape)}")
        return None, None, "scores"
    needs = dict(zip(("learner", "reference"), jestcore.streaming.SCORES[score], strict=True))
    models = {}
    for name, m in (("learner", learner), ("reference", reference)):
        if not needs[name]:
            models[name] = None
            continue
        if m is None:
            raise ValueError(f'score="{score}" needs the {name}\'s outputs, got {name}=None')
        if _is_pair(m):
            models[name] = _pair(m)
        elif isinstance(m, torch.Tensor) and m.ndim == 1:
            models[name] = m.detach()
        else:
            raise TypeError(
                f"{name} must be a PairEmbeddings(image, text, scale, bias) or a 1-D tensor of "
                f"per-example losses, got {type(m).__name__}"
                + (f" of shape {tuple(m.shape)}" if isinstance(m, torch.Tensor) else "")
            )
    kinds = {isinstance(m, jestcore.PairEmbeddings) for m in models.values() if m is not None}
    if len(kinds) > 1:
        raise TypeError("learner and reference must both be PairEmbeddings or both be losses")
    kind = "embeddings" if kinds == {True} else "losses"
    return models["learner"], models["reference"], kind


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


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _gather_models(learner: Any, reference: Any, scores: Any, group: Any) -> tuple[Any, Any, Any]:
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

    if scores is not None:
        if scores.ndim == 2:
            raise ValueError(
                'scope="global" cannot gather a score matrix (its off-diagonal blocks pair '
                "examples of different ranks): pass learner/reference embeddings instead"
            )
        return None, None, gather(scores)
    return gather(learner), gather(reference), None


def _select_indices(
    learner: Any,
    reference: Any,
    scores: Any,
    kind: str,
    n_select: int,
    *,
    method: str,
    n_chunks: int,
    score: str,
    seed: Any,
    noise: Any,
    greedy: bool,
    block_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selected indices and the per-example scores they were drawn from (for stats)."""
    rand = {"seed": seed, "noise": noise, "greedy": greedy}
    if kind == "scores":
        if scores.ndim == 1:
            return jestcore.independent_select(scores, n_select, **rand), scores
        diag = torch.diagonal(scores)
        if method == "independent":
            return jestcore.independent_select(diag, n_select, **rand), diag
        return jestcore.joint_select(scores, n_select, n_chunks=n_chunks, **rand), diag
    per_example = _per_example_scores(learner, reference, score)
    if kind == "losses" or method == "independent":
        return jestcore.independent_select(per_example, n_select, **rand), per_example
    idx = jestcore.joint_select_embeddings(
        learner, reference, n_select, n_chunks=n_chunks, score=score, block_size=block_size, **rand
    )
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
            selection over all ranks' super-batches; each rank gets its share).
        exchange: With ``scope="global"``: ``"padded"`` or ``"exact"``; see
            :func:`~jestcore.adapters.torch.distributed.exchange_selected`.
        group: The ``torch.distributed`` process group (default: the world).
        block_size: Row block of the streaming selection (bounds its temporaries).

    Returns:
        A :class:`SelectedBatch` ``(batch, indices, stats)``.

    Raises:
        TypeError: If an input has the wrong type.
        ValueError: If sizes disagree or an option is out of range.

    Example:
        >>> import torch
        >>> x = torch.arange(10.0)[:, None]
        >>> losses = torch.tensor([0.0, 5, 0, 0, 9, 0, 0, 0, 0, 7])
        >>> sub = select_batch(x, losses, batch_size=3, score="hard_learner", greedy=True)
        >>> sub.indices.tolist(), sub.batch[:, 0].tolist()
        ([4, 9, 1], [4.0, 9.0, 1.0])
    """
    _check_choice("method", method, METHODS)
    _check_choice("scope", scope, SCOPES)
    n_local = batch_size_of(batch)
    learner, reference, kind = _check_models(learner, reference, scores, score)
    for name, m in (("learner", learner), ("reference", reference), ("scores", scores)):
        if m is not None and _n_examples(m) != n_local:
            raise ValueError(
                f"{name} has outputs for {_n_examples(m)} examples but the batch has {n_local}"
            )
    n_per_rank = _n_select(n_local, batch_size, filter_ratio)
    rank, world = dist_.rank_and_world(group)
    if scope == "local" or world == 1:
        if scope == "local" and world > 1 and seed is not None:
            seed = jestcore.fold_in(seed, rank)
        idx, per_example = _select_indices(
            learner, reference, scores, kind, n_per_rank,
            method=method, n_chunks=n_chunks, score=score, seed=seed, noise=noise,
            greedy=greedy, block_size=block_size,
        )  # fmt: skip
        return SelectedBatch(take_batch(batch, idx), idx, _stats(per_example, idx))
    _check_choice("exchange", exchange, dist_.EXCHANGES)
    dist_.check_equal_sizes(n_local, group)
    learner, reference, scores = _gather_models(learner, reference, scores, group)
    global_idx, per_example = _select_indices(
        learner, reference, scores, kind, n_per_rank * world,
        method=method, n_chunks=n_chunks, score=score, seed=seed, noise=noise,
        greedy=greedy, block_size=block_size,
    )  # fmt: skip
    global_idx = dist_.broadcast_selection(global_idx, group)
    sub = dist_.exchange_selected(batch, global_idx, n_local, exchange=exchange, group=group)
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
            raise ValueError("give exactly one of batch_size=... or filter_ratio=...")
        if batch_size is not None:
            _n_select(batch_size, batch_size, None)
        else:
            _n_select(10**9, None, filter_ratio)
        jestcore.chunk_sizes(n_chunks, n_chunks)  # validates n_chunks >= 1
        if score not in jestcore.streaming.SCORES:
            raise ValueError(
                f"score must be one of {sorted(jestcore.streaming.SCORES)}, got {score!r}"
            )
        _check_choice("method", method, METHODS)
        _check_choice("scope", scope, SCOPES)
        _check_choice("exchange", exchange, dist_.EXCHANGES)
        jestcore.fold_in(seed, 0)  # validates the seed
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
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
        """The step counter, seed and config: all that decides future selections."""
        return {"step": self.step, "seed": self.seed, "config": self.config}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`; refuses a state saved with a different config.

        Raises:
            ValueError: If ``state`` is malformed or its config differs from this selector's.
        """
        if not isinstance(state, Mapping) or not {"step", "seed", "config"} <= set(state):
            raise ValueError("state must be a dict from JESTSelector.state_dict()")
        diff = {
            k: (state["config"].get(k), v)
            for k, v in self.config.items()
            if state["config"].get(k) != v
        }
        if diff:
            raise ValueError(
                "state was saved by a selector with a different config (saved, current): "
                + ", ".join(f"{k}={a!r}, {b!r}" for k, (a, b) in diff.items())
            )
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"state['step'] must be an int >= 0, got {step!r}")
        jestcore.fold_in(state["seed"], 0)
        self.step, self.seed = step, state["seed"]

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if v is not None)
        return f"JESTSelector({opts}, seed={self.seed}, step={self.step})"


def _first_device(batch: Any) -> torch.device:
    for _, leaf in leaves(batch):
        if isinstance(leaf, torch.Tensor):
            return leaf.device
    return torch.device("cpu")
