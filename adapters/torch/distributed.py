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

Faults. Before its collectives, a global selection runs :func:`agree`: every rank checks its
own inputs, then all ranks all-gather one small status vector (an ok flag, the sizes, options
and seed, scale and bias, and hashes of the outputs' and the batch's layouts) and read it on the
host (one synchronisation per step). If a rank refused its inputs (say a NaN in its embeddings),
every rank raises the same error, naming that rank and its message; if the ranks disagree (a
different seed, ``n_chunks`` or batch layout on one rank), every rank raises a ``ValueError``
naming what differs. So a bad input on one rank never leaves the others waiting in a collective.

What this cannot catch is a rank that never reaches the selection (it crashed or hangs in your
code, or called it with another ``scope``): the others then wait in the status exchange until
the process group's timeout, ``torch.distributed.init_process_group(..., timeout=...)``, which
bounds every collective (gloo raises a ``RuntimeError`` when it expires or when a peer's
connection closes; with NCCL, PyTorch's watchdog aborts the group). Set it to a few times your
slowest step rather than relying on the default of tens of minutes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from jestcore.adapters.torch.trees import batch_size_of, check_positions, leaves, map_batch

from jestcore._validation import check_int

__all__ = [
    "EXCHANGES",
    "agree",
    "all_gather_rows",
    "exchange_selected",
    "rank_and_world",
    "shares",
    "stable_hash",
]

#: How the selected examples reach the rank that trains on them.
EXCHANGES = ("padded", "exact")


def rank_and_world(group: Any = None) -> tuple[int, int]:
    """``(rank, world size)`` in ``group``; ``(0, 1)`` when ``torch.distributed`` is not in use."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


#: Bytes of an error message sent to the other ranks (longer messages are cut).
MESSAGE_BYTES = 1024


def stable_hash(data: Any) -> int:
    """A 63-bit hash of JSON-able ``data`` that is the same in every process (unlike ``hash``)."""
    text = json.dumps(data, sort_keys=True, default=repr, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def _float_bits(x: float) -> int:
    return int(struct.unpack("<i", struct.pack("<f", x))[0])


def _status_entry(value: Any, device: torch.device) -> torch.Tensor:
    """``value`` (an int, a float or a 0-d tensor) as one int64, without a host read."""
    if isinstance(value, torch.Tensor):
        t = value.detach().to(device).reshape(1)
        if t.is_floating_point():  # float32 bit pattern, as for Python floats
            return t.to(torch.float32).view(torch.int32).to(torch.int64)
        return t.to(torch.int64) & 0xFFFFFFFF
    if isinstance(value, float):
        value = _float_bits(value)
    return torch.tensor([int(value)], dtype=torch.int64, device=device)


def _show(kind: Any, value: int) -> str:
    if kind == "float":
        return repr(struct.unpack("<f", struct.pack("<i", value))[0])
    if kind == "hash":
        return f"#{value % 16**6:06x}"
    if isinstance(kind, tuple):
        return repr(kind[value]) if 0 <= value < len(kind) else "none"
    return str(value)


def _raise_refused(
    rows: list[list[int]], error: BaseException | None, group: Any, device: torch.device
) -> None:
    """Every rank's error message (one more all-gather), raised on every rank."""
    _, world = rank_and_world(group)
    text = b"" if error is None else f"{type(error).__name__}: {error}".encode()[:MESSAGE_BYTES]
    mine = torch.zeros(MESSAGE_BYTES, dtype=torch.uint8, device=device)
    if text:
        mine[: len(text)] = torch.frombuffer(bytearray(text), dtype=torch.uint8).to(device)
    table = all_gather_rows(mine, group).reshape(world, MESSAGE_BYTES)
    messages = [bytes(row).rstrip(b"\0").decode(errors="replace") for row in table.cpu().tolist()]
    failed = [r for r in range(world) if not rows[r][0]]
    first = messages[failed[0]]
    kind = first.split(":", 1)[0]
    cls = {"ValueError": ValueError, "TypeError": TypeError}.get(kind, RuntimeError)
    others = ", ".join(map(str, failed[1:]))
    also = f" (rank{'s' if len(failed) > 2 else ''} {others} failed too)" if others else ""
    raise cls(
        f'scope="global": rank {failed[0]} of {world} refused its inputs, so every rank stops: '
        f"{first}{also}"
    ) from error


def agree(
    fields: Sequence[tuple[str, Any]],
    values: Sequence[Any] | None,
    error: BaseException | None = None,
    group: Any = None,
) -> None:
    """Checks that every rank is ready and agrees, before the collectives of a global selection.

    One all-gather of ``1 + len(fields)`` int64 values per rank, read on the host; a second one
    (of :data:`MESSAGE_BYTES` bytes per rank) only when a rank failed. Every rank must call it
    with the same ``fields``, including a rank whose checks failed (``values=None`` and the
    ``error``), so no rank is left waiting.

    Args:
        fields: ``(what is needed, how to show it)`` per value, e.g. ``("the same seed",
            "int")``; shown as ``"int"``, ``"float"``, ``"hash"`` or by a tuple of labels (the
            value is an index into it).
        values: This rank's values (Python ints or floats, or 0-d tensors, read without a host
            synchronisation), or ``None`` if this rank's checks failed.
        error: The exception that made this rank's checks fail.
        group: The process group (default: the world).

    Raises:
        ValueError: On every rank, if some rank failed with a ``ValueError`` (likewise
            ``TypeError``; other exceptions become ``RuntimeError``), naming the rank and its
            message; or if the ranks' values differ: ``scope="global" needs the same seed on
            every rank, got rank 0: 1, rank 1: 2``.
    """
    _, world = rank_and_world(group)
    if world == 1:
        if error is not None:
            raise error
        return
    device = _collective_device(group)
    ok = error is None and values is not None
    if ok:
        assert values is not None and len(values) == len(fields)
        entries = [_status_entry(v, device) for v in values]
    else:
        entries = [torch.zeros(len(fields), dtype=torch.int64, device=device)]
    mine = torch.cat([torch.tensor([int(ok)], dtype=torch.int64, device=device), *entries])
    rows = all_gather_rows(mine, group).reshape(world, -1).cpu().tolist()  # the one host sync
    if not all(row[0] for row in rows):
        _raise_refused(rows, error, group, device)
    differ = [
        f"{need} on every rank, got "
        + ", ".join(f"rank {r}: {_show(kind, row[1 + i])}" for r, row in enumerate(rows))
        for i, (need, kind) in enumerate(fields)
        if len({row[1 + i] for row in rows}) > 1
    ]
    if differ:
        raise ValueError('scope="global" needs ' + "; and ".join(differ))


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

    Every rank must call it with the same ``global_indices``, ``n_local`` and ``exchange``, and
    batches of the same structure. The arguments are checked first (the indices' values with
    one host synchronisation, unless they cannot be read, as on the meta device);
    :func:`~jestcore.adapters.torch.select_batch` calls the exchange without that read.

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

    Raises:
        TypeError: If a leaf of ``batch`` is not a tensor, or ``global_indices`` is not an
            integer tensor, or ``n_local`` not an int.
        ValueError: If ``exchange`` is unknown, ``n_local`` is not the batch's size, or
            ``global_indices`` is not 1-D, has a length that is not a multiple of the number
            of ranks, or holds a position outside ``[0, world * n_local)``.
    """
    if exchange not in EXCHANGES:
        raise ValueError(f"exchange must be one of {EXCHANGES}, got {exchange!r}")
    check_tensor_leaves(batch)
    _, world = rank_and_world(group)
    n = batch_size_of(batch)
    n_local = check_int("n_local", n_local, low=0)
    if n_local != n:
        raise ValueError(f"n_local must be the batch's number of examples {n}, got {n_local}")
    if n_local < 1:
        raise ValueError("batch must hold at least one example, got an empty batch (N = 0)")
    g = global_indices
    check_positions(
        "global_indices", g, world * n_local,
        of=f"{world} rank{'s' if world > 1 else ''} of {n_local} examples",
    )  # fmt: skip
    if g.shape[0] == 0 or g.shape[0] % world:
        raise ValueError(
            "global_indices must have a length that is a positive multiple of the number of "
            f"ranks ({world}), got shape {tuple(g.shape)}"
        )
    return exchange_unchecked(batch, g, n_local, exchange, group)


def check_tensor_leaves(batch: Any) -> None:
    """Refuses a batch with a leaf that is not a tensor (strings cannot be exchanged)."""
    for path, leaf in leaves(batch):
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f'scope="global" exchanges examples between ranks, so every leaf of the batch '
                f"must be a tensor; {path} is a {type(leaf).__name__}"
            )


def exchange_unchecked(
    batch: Any, global_indices: torch.Tensor, n_local: int, exchange: str, group: Any
) -> Any:
    """:func:`exchange_selected` without its checks (for already-validated selections)."""
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
