"""Selection over a super-batch sharded along one axis of a ``jax.sharding.Mesh``.

Two scopes, as in the paper's distributed setting and the PyTorch adapter:

* ``scope="local"``: every device selects ``n_select / D`` examples from its own shard of
  ``N / D`` (``shard_map``; no communication at all). Device ``i`` draws with seed
  ``fold_in(seed, i)``, so shards get independent noise and the result equals, shard by shard,
  :func:`jestcore.joint_select_embeddings` on that shard with that seed.
* ``scope="global"``: exact joint selection over the whole super-batch: the same indices as the
  unsharded selection with the same seed (up to floating-point near-ties), and every device
  holds the same result. No device
  ever holds more than its shard: each keeps the conditional logits and noise of its own
  ``N / D`` candidates; per chunk, the devices all-gather their local top-``c`` candidates
  (``D * c`` values) and take the top-``c`` of those (ties still to the lower index, since
  shards are gathered in index order), then all-reduce the chosen ``c`` rows of embeddings so
  that each device can update its own logits (``4 * (c x d) @ (d x N/D)`` products).
  Communication per chunk: an all-gather of ``D * c`` candidates and an all-reduce of ``c``
  rows per embedding matrix; the arithmetic is divided by ``D``. The chunk and block loops are
  the spec's (:func:`jestcore.selection.blocked_select`, with this top-k across devices as its
  ``pick`` and the shard's first row as its ``offset``), not a copy.

Indices are always global (positions in the super-batch). :func:`gather_sharded` turns them
into the selected sub-batch, sharded along the same axis: locally for ``scope="local"``, and for
``scope="global"`` by a reduce-scatter of the owners' rows (bit-exact: rows travel as integer
bit patterns, so the sum with the other devices' zeros changes nothing).

Meshes: pass axes of type ``AxisType.Auto`` (``jax.make_mesh(..., axis_types=(AxisType.Auto,))``)
when you also want ``jax.jit`` to shard the rest of the step for you; ``jax.make_mesh`` defaults
to explicit axes in recent JAX.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, PartitionSpec
from jestcore.adapters.jax.selection import (
    _backend,
    as_seed,
    check_embeddings,
    check_jax,
    joint_select_embeddings,
    warn_unroll,
)
from jestcore.adapters.jax.trees import leading_size

from jestcore import _validation as v
from jestcore.random import fold_in
from jestcore.selection import chunk_sizes, gumbel_rows
from jestcore.streaming import (
    PairEmbeddings,
    check_embedding_values,
    check_loss,
    make_terms,
    select_terms,
)

__all__ = ["SCOPES", "gather_sharded", "select_sharded"]

#: The accepted values of ``scope``.
SCOPES = ("local", "global")


def _check_same_devices(arrays: dict[str, Any]) -> None:
    """Refuses arrays committed to different sets of devices, naming them.

    XLA would refuse them too, naming no argument; uncommitted arrays (``jnp.asarray``) go
    where they are needed.
    """
    placed = {
        name: sorted(str(d) for d in a.devices())
        for name, a in arrays.items()
        if isinstance(a, jax.Array) and not _backend.is_lazy(a) and a.committed
    }
    first, devices = next(iter(placed.items()), ("", []))
    for name, ids in placed.items():
        if ids != devices:
            raise ValueError(
                f"{name} is on devices {ids} but {first} is on devices {devices}: put the "
                "learner's and the reference's arrays on the same devices (the mesh's)"
            )


def _check_mesh(mesh: Any, axis: Any, scope: Any) -> int:
    """Validates ``mesh``, ``axis`` and ``scope``; returns the number of devices along ``axis``."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if not isinstance(axis, str) or axis not in mesh.axis_names:
        raise ValueError(f"axis must be one of the mesh's axes {mesh.axis_names}, got {axis!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    return int(mesh.shape[axis])


def _divisible(name: str, value: int, devices: int, axis: str) -> int:
    if value % devices:
        raise ValueError(
            f"{name} must be divisible by the {devices} devices along mesh axis {axis!r}, "
            f"got {value}"
        )
    return value // devices


def _as_arrays(model: PairEmbeddings | None) -> PairEmbeddings | None:
    """``model`` with Python-number ``scale``/``bias`` as (weakly typed) 0-d arrays."""
    if model is None:
        return None
    return PairEmbeddings(*(jnp.asarray(x) for x in model))


def _spec(model: Any, axis: str) -> Any:
    """Partition spec of a model: embeddings split along ``axis``, scale and bias replicated."""
    if model is None:
        return None
    rows, scalar = PartitionSpec(axis), PartitionSpec()
    return PairEmbeddings(rows, rows, scalar, scalar)


class _ShardTerms:
    """One model's signed terms for the candidates of this device's shard (scope="global")."""

    def __init__(self, terms: Any, axis: str, offset: Any, n_local: int):
        self.t, self.axis, self.offset, self.n_local = terms, axis, offset, n_local
        self.xp, self.sign = terms.xp, terms.sign

    def diagonal(self) -> Any:
        """Signed losses of this shard's matching pairs."""
        return self.t.diagonal()

    def rows(self, idx: Any, side: int) -> Any:
        """Rows ``idx`` (global) of the image (side 0) or text (side 1), on every device."""
        return self._rows(self.t.image if side == 0 else self.t.text, idx)

    def products(self, rows: Any, side: int) -> Any:
        """As ``_Terms.products`` (or the softmax's), against this shard's candidates."""
        return self.t.products(rows, side)

    def _rows(self, x: Any, idx: Any) -> Any:
        """Rows ``idx`` (global) of the sharded ``x``, on every device (exact: one owner each)."""
        local = idx - self.offset
        own = (local >= 0) & (local < self.n_local)
        rows = jnp.take(x, jnp.clip(local, 0, self.n_local - 1), axis=0)
        return lax.psum(jnp.where(own[:, None], rows, jnp.zeros((), dtype=x.dtype)), self.axis)

    def half_sums(self, idx: Any, side: int) -> Any:
        """As ``_Terms.half_sums``, for this shard's candidates m (the rows gathered first)."""
        return self.sign * self.products(self.rows(idx, side), side)


def select_sharded(
    learner: PairEmbeddings | None,
    reference: PairEmbeddings | None,
    /,
    n_select: int,
    *,
    mesh: Mesh,
    axis: str = "batch",
    scope: str = "global",
    n_chunks: int = 16,
    score: str = "learnability",
    loss: str = "sigmoid",
    gain: float = 100.0,
    seed: Any = None,
    greedy: bool = False,
    block_size: int | None = None,
    unroll: Any = None,
) -> Any:
    """Joint selection from embeddings sharded along mesh axis ``axis``.

    Works eagerly and inside ``jax.jit`` (mark ``n_select``, ``n_chunks``, ``score``,
    ``loss``, ``gain``, ``greedy``, ``block_size``, ``mesh``, ``axis`` and ``scope`` static).

    Args:
        learner: The learner's :class:`~jestcore.PairEmbeddings`, rows sharded along ``axis``
            (or replicated: ``shard_map`` reshards); ``None`` for ``score="easy_reference"``.
        reference: The reference model's embeddings, likewise; ``None`` for
            ``score="hard_learner"``.
        n_select: Total number of examples to select; a multiple of the number of devices D
            along ``axis`` (for ``"local"``, each device selects ``n_select / D``).
        mesh: The device mesh.
        axis: The mesh axis that the batch is split along; N must be a multiple of its size.
        scope: ``"global"`` (exact selection over the whole super-batch) or ``"local"``
            (each device selects from its own shard).
        n_chunks: Chunks per selection (per device for ``"local"``).
        score: ``"learnability"``, ``"hard_learner"`` or ``"easy_reference"``.
        loss: ``"sigmoid"`` (SigLIP) or ``"softmax"`` (CLIP / InfoNCE); with ``"global"`` the
            softmax's running log-sum-exps are kept per device for its own candidates, updated
            from the same all-reduced rows as the sigmoid's sums.
        gain: The score gain (default 100.0, the paper's recipe; 1.0 is Algorithm 1 as
            printed): each chunk takes the top-k of ``gain * logit + noise``.
        seed: Seed of the portable generator (an int in ``[0, 2**32)`` or a 0-d integer array).
        greedy: Take the plain top-k of each chunk's logits (no noise).
        block_size: Rows of a chunk multiplied at once (default: as the unsharded selection
            over N, so that ``"global"`` performs the same arithmetic).
        unroll: Deprecated and ignored (a ``DeprecationWarning`` when given).

    Returns:
        ``n_select`` global indices into the super-batch. ``"global"``: replicated, chunk by
        chunk, equal to :func:`~jestcore.adapters.jax.joint_select_embeddings` over the whole
        super-batch. ``"local"``: sharded along ``axis``; device ``i``'s ``n_select / D``
        entries are its own picks, in its own chunk order.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape or value is out of range or does not divide evenly over the
            devices, or there is not exactly one source of randomness.
    """
    warn_unroll(unroll)
    check_loss(loss)
    devices = _check_mesh(mesh, axis, scope)
    models, arrays, n = check_embeddings(learner, reference, score)
    scalars = {f"{name}.{f}": getattr(m, f) for name, m, _ in models for f in ("scale", "bias")}
    _check_same_devices({**arrays, **scalars})
    _divisible("N (the super-batch size)", n, devices, axis)
    n_select = v.check_int("n_select", n_select, low=1, high=n, high_doc=f"N = {n}")
    select_local = _divisible("n_select", n_select, devices, axis)
    if scope == "local":
        n_chunks = v.check_int(
            "n_chunks", n_chunks, low=1, high=select_local, high_doc="n_select / D (per device)"
        )
    sizes = chunk_sizes(n_select if scope == "global" else select_local, n_chunks)
    v.check_randomness(seed, None, greedy, (len(sizes), n), jnp)
    gain = v.check_gain(gain)
    if block_size is None:
        block_size = _backend.default_block_size(n)
    block_size = v.check_int("block_size", block_size, low=1)
    terms = 2 * sum(sizes) - 1
    check_embedding_values(models, jnp, _backend, gain=None if greedy else gain, terms=terms)

    seed = jnp.zeros((), dtype=jnp.uint32) if greedy else as_seed(seed)
    return _select_sharded(
        _as_arrays(learner),
        _as_arrays(reference),
        seed,
        mesh=mesh,
        axis=axis,
        scope=scope,
        score=score,
        sizes=sizes,
        greedy=greedy,
        block_size=block_size,
        gain=gain,
        loss=loss,
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "mesh", "axis", "scope", "score", "sizes", "greedy", "block_size", "gain", "loss",
    ),
)  # fmt: skip
def _select_sharded(
    learner: Any,
    reference: Any,
    seed: Any,
    *,
    mesh: Mesh,
    axis: str,
    scope: str,
    score: str,
    sizes: tuple[int, ...],
    greedy: bool,
    block_size: int,
    gain: float,
    loss: str = "sigmoid",
) -> Any:
    """The compiled part of :func:`select_sharded` (inlined when called under an outer jit)."""
    n_local = check_embeddings(learner, reference, score)[2] // mesh.shape[axis]
    in_specs = (_spec(learner, axis), _spec(reference, axis), PartitionSpec())

    def local(learner: Any, reference: Any, seed: Any) -> Any:
        i = lax.axis_index(axis)
        idx = joint_select_embeddings(
            learner,
            reference,
            sum(sizes),
            n_chunks=len(sizes),
            score=score,
            loss=loss,
            gain=gain,
            seed=None if greedy else fold_in(seed, i),
            greedy=greedy,
            block_size=block_size,
        )
        return idx + (i * n_local).astype(idx.dtype)

    def global_(learner: Any, reference: Any, seed: Any) -> Any:
        offset = lax.axis_index(axis) * n_local
        models = check_embeddings(learner, reference, score)[0]
        terms = [_ShardTerms(t, axis, offset, n_local) for t in make_terms(models, jnp, loss=loss)]

        def pick(perturbed: Any, size: int) -> Any:
            top = _backend.top_k(perturbed, min(size, n_local))
            values = lax.all_gather(perturbed[top], axis, tiled=True)
            where = lax.all_gather(top + offset.astype(top.dtype), axis, tiled=True)
            return where[_backend.top_k(values, size)]

        noise = None if greedy else gumbel_rows(seed, len(sizes), n_local, xp=jnp, offset=offset)
        return select_terms(
            terms,
            sizes,
            noise,
            jnp,
            block_size=block_size,
            gain=gain,
            loss=loss,
            pick=pick,
            offset=offset,
        )

    if scope == "local":
        mapped = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec(axis))
    else:
        # Every device computes the same indices (the same top-k of the same all-gathered
        # candidates), so the output is replicated by construction; JAX's type check cannot
        # infer that through all_gather, hence check_vma=False. Each device keeps its own copy.
        mapped = jax.shard_map(
            global_, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec(), check_vma=False
        )
    return mapped(learner, reference, seed)


def _to_bits(x: Any) -> Any:
    """``x`` as unsigned integers of the same width (bool as uint8), for an exact sum."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint8)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"gather_sharded does not support complex leaves, got {x.dtype}")
    unsigned = jnp.dtype(f"uint{x.dtype.itemsize * 8}")
    return x if x.dtype == unsigned else lax.bitcast_convert_type(x, unsigned)


def _from_bits(bits: Any, dtype: Any) -> Any:
    if dtype == jnp.bool_:
        return bits.astype(jnp.bool_)
    return bits if bits.dtype == dtype else lax.bitcast_convert_type(bits, dtype)


def gather_sharded(
    tree: Any, indices: Any, /, *, mesh: Mesh, axis: str = "batch", scope: str = "global"
) -> Any:
    """The rows ``indices`` of every leaf of a super-batch sharded along mesh axis ``axis``.

    Args:
        tree: A pytree of arrays whose leading axis is the super-batch (N, a multiple of the
            number of devices D along ``axis``), sharded (or to be sharded) along ``axis``.
        indices: Global indices from :func:`select_sharded` with the same ``scope``: sharded
            along ``axis`` with each device's indices inside its own shard (``"local"``), or
            replicated (``"global"``, length a multiple of D).
        mesh: The device mesh.
        axis: The mesh axis that the batch is split along.
        scope: The scope the indices were selected with.

    Returns:
        The sub-batch: the same pytree with leading axis ``len(indices)``, sharded along
        ``axis``. For ``"global"``, device ``i`` holds the ``i``-th ``1/D`` of the selection;
        for ``"local"``, its own picks. Leaves are exact copies (bit patterns).

    Raises:
        TypeError: If ``tree`` has a leaf that is not an array, or a complex leaf (global).
        ValueError: If the leaves' leading sizes differ or do not divide over the devices.
    """
    devices = _check_mesh(mesh, axis, scope)
    n = leading_size(tree)
    _divisible("the super-batch size", n, devices, axis)
    check_jax(indices=indices)
    if indices.ndim != 1 or not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(f"indices must be a 1-D integer array, got {indices.shape} {indices.dtype}")
    _divisible("len(indices)", indices.shape[0], devices, axis)

    return _gather_sharded(tree, indices, mesh=mesh, axis=axis, scope=scope)


@functools.partial(jax.jit, static_argnames=("mesh", "axis", "scope"))
def _gather_sharded(tree: Any, indices: Any, *, mesh: Mesh, axis: str, scope: str) -> Any:
    """The compiled part of :func:`gather_sharded`."""

    def local(tree: Any, idx: Any) -> Any:
        def take(x: Any) -> Any:
            return jnp.take(x, idx - lax.axis_index(axis) * x.shape[0], axis=0)

        return jax.tree.map(take, tree)

    def global_(tree: Any, idx: Any) -> Any:
        def take(x: Any) -> Any:
            position = idx - lax.axis_index(axis) * x.shape[0]
            own = (position >= 0) & (position < x.shape[0])
            bits = _to_bits(jnp.take(x, jnp.clip(position, 0, x.shape[0] - 1), axis=0))
            own = jnp.reshape(own, own.shape + (1,) * (bits.ndim - 1))
            bits = jnp.where(own, bits, jnp.zeros((), dtype=bits.dtype))
            mine = lax.psum_scatter(bits, axis, scatter_dimension=0, tiled=True)
            return _from_bits(mine, x.dtype)

        return jax.tree.map(take, tree)

    body = local if scope == "local" else global_
    index_spec = PartitionSpec(axis) if scope == "local" else PartitionSpec()
    mapped = jax.shard_map(
        body, mesh=mesh, in_specs=(PartitionSpec(axis), index_spec), out_specs=PartitionSpec(axis)
    )
    return mapped(tree, indices)
