"""Selection state as a pytree, and a selector that holds the static configuration.

The state is two 0-d arrays, ``(seed, step)``: a ``NamedTuple``, so it passes through
``jax.jit``, lives next to the parameters and optimizer state, and checkpoints like any other
pytree (Orbax, or ``numpy.savez`` of its leaves). Step ``t`` selects with seed
``jestcore.fold_in(seed, t)``, so a run resumed from a checkpointed state selects exactly what
the uninterrupted run would have, and any backend can reproduce a step's selection.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jestcore.adapters.jax.selection import check_embeddings, joint_select_embeddings, warn_unroll
from jestcore.adapters.jax.sharding import SCOPES, _check_mesh, gather_sharded, select_sharded
from jestcore.adapters.jax.trees import gather, leading_size

from jestcore import _validation as v
from jestcore.random import fold_in
from jestcore.selection import sub_batch_size
from jestcore.streaming import PairEmbeddings, check_loss, check_score

__all__ = ["JESTSelector", "SelectionState", "init_state"]


class SelectionState(NamedTuple):
    """The random state of selection across training steps (a pytree of two 0-d arrays).

    Attributes:
        seed: The run's seed, uint32.
        step: How many selections have been made, int32.
    """

    seed: Any
    step: Any

    def step_seed(self) -> Any:
        """The seed of the current step's selection, ``fold_in(seed, step)`` (0-d uint32)."""
        return fold_in(self.seed, self.step)

    def next(self) -> SelectionState:
        """The state of the following step."""
        return SelectionState(self.seed, self.step + 1)


def init_state(seed: Any, /) -> SelectionState:
    """The selection state of a new run.

    Args:
        seed: An int in ``[0, 2**32)`` or a 0-d integer array (its low 32 bits are used).

    Returns:
        ``SelectionState(seed, step=0)`` with dtypes uint32 and int32 (also with 64-bit types
        enabled, so checkpoints do not depend on that flag).
    """
    v.check_seed(seed)
    return SelectionState(
        jnp.asarray(seed).astype(jnp.uint32) if not isinstance(seed, int) else jnp.uint32(seed),
        jnp.zeros((), dtype=jnp.int32),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class JESTSelector:
    """Static JEST configuration with pure ``select`` methods for a jitted train step.

    Frozen and hashable, so it can be closed over or passed as a static argument of
    ``jax.jit``. Give exactly one of ``batch_size`` (the sub-batch size b) and
    ``filter_ratio`` (f: the sub-batch is :func:`jestcore.sub_batch_size` of a super-batch of
    N, ``round(N * (1 - f))`` with halves rounded up, at least one: the rule every adapter uses).

    Attributes:
        batch_size: How many examples to select per step.
        filter_ratio: Fraction of the super-batch to filter out, in ``[0, 1)`` (0.8 in the paper).
        n_chunks: Chunks per selection (16 in the paper).
        score: ``"learnability"``, ``"hard_learner"`` or ``"easy_reference"``.
        loss: ``"sigmoid"`` (SigLIP, the default) or ``"softmax"`` (CLIP / InfoNCE, the
            paper's Algorithm 3): the contrastive loss the embeddings are scored under.
        gain: The score gain of the sampling (default 100.0, the paper's recipe; 1.0 is
            Algorithm 1 as printed); see :func:`jestcore.joint_select`.
        mesh: A device mesh to select over a super-batch sharded along ``axis`` (``None``:
            unsharded).
        axis: The mesh axis that the batch is split along.
        scope: ``"global"`` (exact selection over the whole super-batch) or ``"local"``
            (per-device selection); see :mod:`jestcore.adapters.jax.sharding`.
        block_size: Rows of a chunk multiplied at once (default: about 2**23 elements, as
            :func:`jestcore.joint_select_embeddings` on JAX).
        unroll: Deprecated and ignored (a ``DeprecationWarning`` when given); the chunk loop
            is the spec's, a ``lax.scan`` under ``jax.jit``.

    Example:
        >>> import jax
        >>> from jestcore import PairEmbeddings
        >>> selector = JESTSelector(filter_ratio=0.5, n_chunks=2, score="hard_learner")
        >>> k1, k2 = jax.random.split(jax.random.key(0))
        >>> emb = PairEmbeddings(jax.random.normal(k1, (8, 4)), jax.random.normal(k2, (8, 4)),
        ...                      1.0, 0.0)
        >>> state = selector.init(0)
        >>> idx, state = jax.jit(selector.select)(state, emb, None)
        >>> idx.shape, int(state.step)
        ((4,), 1)
    """

    batch_size: int | None = None
    filter_ratio: float | None = None
    n_chunks: int = 16
    score: str = "learnability"
    loss: str = "sigmoid"
    gain: float = 100.0
    mesh: Mesh | None = None
    axis: str = "batch"
    scope: str = "global"
    block_size: int | None = None
    unroll: int | bool | None = None

    def __post_init__(self) -> None:
        """Checks the configuration (raises ``TypeError`` / ``ValueError`` naming the field)."""
        if (self.batch_size is None) == (self.filter_ratio is None):
            raise ValueError(
                "give exactly one of batch_size and filter_ratio, got "
                f"batch_size={self.batch_size!r}, filter_ratio={self.filter_ratio!r}"
            )
        if self.batch_size is not None:
            v.check_int("batch_size", self.batch_size, low=1)
        if self.filter_ratio is not None:
            v.check_ratio("filter_ratio", self.filter_ratio)
        warn_unroll(self.unroll)
        v.check_int("n_chunks", self.n_chunks, low=1)
        check_score(self.score)
        check_loss(self.loss)
        v.check_gain(self.gain)
        if self.mesh is not None:
            _check_mesh(self.mesh, self.axis, self.scope)
        elif self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.block_size is not None:
            v.check_int("block_size", self.block_size, low=1)

    def n_select(self, n: int, /) -> int:
        """How many examples to select from a super-batch of ``n``."""
        n = v.check_int("N (the super-batch size)", n, low=1)
        return sub_batch_size(n, filter_ratio=self.filter_ratio, batch_size=self.batch_size)

    def init(self, seed: Any, /) -> SelectionState:
        """The selection state of a new run (see :func:`init_state`).

        With a ``mesh``, the state is replicated over it: the sharding that a jitted step
        returns it with, so the step's first call compiles the same program as the later ones.
        """
        state = init_state(seed)
        if self.mesh is None:
            return state
        return jax.device_put(state, NamedSharding(self.mesh, PartitionSpec()))

    def select(
        self,
        state: SelectionState,
        learner: PairEmbeddings | None,
        reference: PairEmbeddings | None,
    ) -> tuple[Any, SelectionState]:
        """Selects this step's sub-batch; pure, so it belongs inside the jitted train step.

        Args:
            state: The current :class:`SelectionState`.
            learner: The learner's embeddings of the super-batch (``None`` for
                ``score="easy_reference"``).
            reference: The reference model's embeddings (``None`` for ``score="hard_learner"``).

        Returns:
            ``(indices, next_state)``: the selected positions in the super-batch (see
            :func:`~jestcore.adapters.jax.select_sharded` for their layout on a mesh) and the
            state of the next step.
        """
        if not isinstance(state, SelectionState):
            raise TypeError(f"state must be a SelectionState, got {type(state).__name__}")
        n = check_embeddings(learner, reference, self.score)[2]
        options = dict(
            n_chunks=self.n_chunks,
            score=self.score,
            loss=self.loss,
            gain=self.gain,
            seed=state.step_seed(),
            block_size=self.block_size,
        )
        if self.mesh is None:
            idx = joint_select_embeddings(learner, reference, self.n_select(n), **options)
        else:
            idx = select_sharded(
                learner,
                reference,
                self.n_select(n),
                mesh=self.mesh,
                axis=self.axis,
                scope=self.scope,
                **options,
            )
        return idx, state.next()

    def gather(self, batch: Any, indices: Any, /) -> Any:
        """The selected examples of every leaf of ``batch`` (sharded along ``axis`` on a mesh)."""
        if self.mesh is None:
            return gather(batch, indices)
        return gather_sharded(batch, indices, mesh=self.mesh, axis=self.axis, scope=self.scope)

    def select_batch(
        self,
        state: SelectionState,
        batch: Any,
        learner: PairEmbeddings | None,
        reference: PairEmbeddings | None,
    ) -> tuple[Any, Any, SelectionState]:
        """:meth:`select`, then :meth:`gather`: ``(sub_batch, indices, next_state)``."""
        leading_size(batch)
        idx, state = self.select(state, learner, reference)
        return self.gather(batch, idx), idx, state
