"""Selection across ``torch.distributed`` ranks: gathering scores, exchanging the selected examples.

Two scopes (see :class:`~jestcore.adapters.torch.JESTSelector`):

* ``"local"``: each rank selects its share from its own shard of the super-batch, with a seed
  folded with its rank (as the paper does per device). No communication.
* ``"global"``: every rank all-gathers the learner and reference embeddings (or per-example
  losses) of all shards, computes the identical selection over the concatenated super-batch
  (rank ``r``'s examples at positions ``r * n_local ... (r + 1) * n_local - 1``) with the
  shared seed, and trains on its share: the global selection's positions ``r, r + W, r + 2W,
  ...`` (``W`` ranks), so every rank gets examples from every chunk. The examples of a share
  live on other ranks, so they are exchanged with one ``all_to_all`` per tensor of the batch:

  - ``exchange="padded"`` (default) sends each rank a fixed-size block of ``batch_size`` rows
    from every rank and keeps the rows it needs: fixed shapes, no host synchronisation, and
    ``W * batch_size`` rows sent per rank.
  - ``exchange="exact"`` sends exactly the rows each rank needs (``batch_size`` received per rank
    in total), at the price of reading the per-rank counts on the host once per step.

  Rank 0's selection is broadcast, so all ranks train on exactly one global selection even if
  a device's kernels were not bitwise deterministic.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from jestcore.adapters.torch.trees import leaves, map_batch

__all__ = ["EXCHANGES", "all_gather_rows", "exchange_selected", "rank_and_world", "shares"]

#: How the selected examples reach the rank that trains on them.
EXCHANGES = ("padded", "exact")


def rank_and_world(group: Any = None) -> tuple[int, int]:
    """``(rank, world size)`` in ``group``; ``(0, 1)`` when ``torch.distributed`` is not in use."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def check_equal_sizes(n_local: int, group: Any = None) -> None:
    """Checks that every rank has a super-batch of ``n_local`` examples.

    One small all-gather, read on the host: collectives on tensors of different sizes would
    fail obscurely or hang, so this runs before them at every global selection.

    Raises:
        ValueError: If the ranks' super-batches differ in size (on every rank).
    """
    _, world = rank_and_world(group)
    if world == 1:
        return
    device = _collective_device(group)
    mine = torch.tensor([n_local], dtype=torch.int64, device=device)
    sizes = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(sizes, mine, group=group)
    found = [int(s) for s in sizes]
    if len(set(found)) > 1:
        raise ValueError(
            f'scope="global" needs a super-batch of the same size on every rank, got {found}'
        )


def _collective_device(group: Any) -> torch.device:
    """The device that the group's backend communicates from (CUDA for NCCL, else CPU)."""
    backend = dist.get_backend(group)
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_rows(x: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Concatenates every rank's ``x`` along dimension 0, in rank order (no autograd).

    Args:
        x: A tensor of the same shape and dtype on every rank.
        group: The process group (default: the world).

    Returns:
        A tensor of ``world * x.shape[0]`` rows, on ``x``'s device.
    """
    _, world = rank_and_world(group)
    x = x.detach().contiguous()
    if world == 1:
        return x
    out = torch.empty((world * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    dist.all_gather_into_tensor(out, x, group=group)
    return out


def shares(global_indices: torch.Tensor, world: int) -> torch.Tensor:
    """Each rank's share of a global selection: row ``r`` holds positions ``r, r + W, ...``.

    Args:
        global_indices: The ``world * b`` selected positions in the concatenated super-batch.
        world: The number of ranks ``W``.

    Returns:
        A ``(W, b)`` tensor.
    """
    return global_indices.reshape(-1, world).T


def broadcast_selection(indices: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Rank 0's ``indices`` on every rank (the selection is computed everywhere; one wins)."""
    _, world = rank_and_world(group)
    if world == 1:
        return indices
    device = _collective_device(group)
    buf = indices.to(device).contiguous()
    dist.broadcast(buf, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
    return buf.to(indices.device)


def _wire(leaf: torch.Tensor) -> tuple[torch.Tensor, torch.dtype]:
    """A tensor every backend can send (bool as uint8), and the dtype to restore."""
    if leaf.dtype == torch.bool:
        return leaf.to(torch.uint8), torch.bool
    return leaf, leaf.dtype


def _all_to_all_padded(
    leaf: torch.Tensor, rows: torch.Tensor, owners: torch.Tensor, rank: int, group: Any
) -> torch.Tensor:
    b = rows.shape[1]
    data, dtype = _wire(leaf)
    send = data.index_select(0, rows.reshape(-1).to(data.device)).contiguous()
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    # recv[p * b + j] is rank p's row for slot j of every rank's share; keep ours from its owner.
    mine = owners[rank].to(data.device) * b + torch.arange(b, device=data.device)
    return recv.index_select(0, mine).to(dtype)


def _all_to_all_exact(
    leaf: torch.Tensor,
    rows: torch.Tensor,
    owners: torch.Tensor,
    counts: list[list[int]],
    rank: int,
    group: Any,
) -> torch.Tensor:
    world, b = rows.shape
    data, dtype = _wire(leaf)
    device = data.device
    # To rank q, in slot order, the rows of q's share that this rank owns.
    order = torch.argsort((owners != rank).to(torch.int8), dim=1, stable=True)
    send_rows = torch.cat([rows[q, order[q, : counts[q][rank]]] for q in range(world)])
    send = data.index_select(0, send_rows.to(device)).contiguous()
    recv = torch.empty((b, *data.shape[1:]), dtype=data.dtype, device=device)
    dist.all_to_all_single(
        recv,
        send,
        output_split_sizes=counts[rank],
        input_split_sizes=[counts[q][rank] for q in range(world)],
        group=group,
    )
    # Received grouped by source rank, each in slot order: undo that grouping.
    by_source = torch.argsort(owners[rank], stable=True).to(device)
    out = torch.empty_like(recv)
    out.index_copy_(0, by_source, recv)
    return out.to(dtype)


def exchange_selected(
    batch: Any,
    global_indices: torch.Tensor,
    n_local: int,
    *,
    exchange: str = "padded",
    group: Any = None,
) -> Any:
    """This rank's share of a global selection, fetched from the ranks that hold its examples.

    Args:
        batch: This rank's shard of the super-batch (``n_local`` examples): a tensor or a nesting
            of tuples, lists, dicts and dataclasses of tensors (tensors only: no strings).
        global_indices: The global selection, identical on every rank (``world * b`` positions
            into the rank-ordered concatenation of the shards).
        n_local: The number of examples per rank.
        exchange: ``"padded"`` (fixed shapes, no host synchronisation) or ``"exact"`` (minimal
            traffic, reads per-rank counts on the host); see the module docstring.
        group: The process group (default: the world).

    Returns:
        A batch of the same structure holding the ``b`` examples of ``shares(...)[rank]``, in that
        order, on the devices of ``batch``'s tensors.
    """
    if exchange not in EXCHANGES:
        raise ValueError(f"exchange must be one of {EXCHANGES}, got {exchange!r}")
    for path, leaf in leaves(batch):
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f'scope="global" exchanges examples between ranks, so every leaf of the batch '
                f"must be a tensor; {path} is a {type(leaf).__name__}"
            )
    rank, world = rank_and_world(group)
    table = shares(global_indices, world)
    owners = torch.div(table, n_local, rounding_mode="floor")
    rows = table - owners * n_local
    if world == 1:
        return map_batch(lambda leaf: leaf.index_select(0, rows[0].to(leaf.device)), batch)
    if exchange == "padded":
        return map_batch(lambda leaf: _all_to_all_padded(leaf, rows, owners, rank, group), batch)
    per_pair = torch.stack([(owners == p).sum(dim=1) for p in range(world)], dim=1)
    counts = per_pair.cpu().tolist()  # counts[q][p]: rows of q's share held by rank p
    return map_batch(lambda leaf: _all_to_all_exact(leaf, rows, owners, counts, rank, group), batch)
