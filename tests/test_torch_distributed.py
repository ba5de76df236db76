"""Selection over ``torch.distributed`` (gloo, CPU) with 2 and 4 processes.

Each test launches the ranks as subprocesses of this file (``python test_torch_distributed.py
INIT_FILE OUT_DIR RANK WORLD``, through :mod:`ranks`), with a rendezvous file, a collective
timeout and a process timeout, so a failure can never hang the suite. Every rank writes what it
selected; the test recomputes the expected selections in one process over the whole super-batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import ranks
import torch

import jestcore

N_LOCAL, B, D, CHUNKS = 24, 5, 4, 3
SEED, SELECTOR_SEED = 77, 2024


def super_batch(world: int):
    """The global super-batch: every rank builds the same and keeps its shard."""
    gen = torch.Generator().manual_seed(world)
    n = world * N_LOCAL
    models = [
        jestcore.PairEmbeddings(
            torch.randn(n, D, generator=gen), torch.randn(n, D, generator=gen), 8.0, -4.0
        )
        for _ in range(2)
    ]
    losses = torch.rand(2, n, generator=gen)
    ids = torch.arange(n)
    batch = {"id": ids, "x": ids.float()[:, None].repeat(1, 3), "odd": ids % 2 == 1}
    return batch, models, losses


def shard(x, rank):
    s = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
    if isinstance(x, dict):
        return {k: v[s] for k, v in x.items()}
    if isinstance(x, jestcore.PairEmbeddings):
        return x._replace(image=x.image[s], text=x.text[s])
    return x[s]


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from jestcore.adapters.torch import JESTSelector, select_batch
    from jestcore.adapters.torch.distributed import all_gather_rows

    ranks.init_gloo(init_file, rank, world, timeout_s=60)
    batch, (learner, reference), losses = super_batch(world)
    mine = shard(batch, rank)
    ml, mr = shard(learner, rank), shard(reference, rank)
    out: dict[str, np.ndarray] = {}

    def record(name, result):
        out[f"{name}/indices"] = result.indices.numpy()
        out[f"{name}/id"] = result.batch["id"].numpy()
        assert torch.equal(result.batch["x"][:, 0], result.batch["id"].float())
        assert torch.equal(result.batch["odd"], result.batch["id"] % 2 == 1)
        assert result.batch["odd"].dtype == torch.bool

    kw = {"batch_size": B, "n_chunks": CHUNKS, "seed": SEED}
    for exchange in ("padded", "exact"):
        record(exchange, select_batch(mine, ml, mr, scope="global", exchange=exchange, **kw))
    # what this rank computes before rank 0's selection is broadcast
    gathered = [
        m._replace(image=all_gather_rows(m.image), text=all_gather_rows(m.text)) for m in (ml, mr)
    ]
    out["own_global"] = jestcore.joint_select_embeddings(
        *gathered, world * B, n_chunks=CHUNKS, seed=SEED
    ).numpy()
    record("local", select_batch(mine, ml, mr, scope="local", **kw))
    record(
        "losses",
        select_batch(
            mine,
            shard(losses[0], rank),
            shard(losses[1], rank),
            scope="global",
            batch_size=B,
            seed=SEED,
        ),
    )
    selector = JESTSelector(
        batch_size=B,
        n_chunks=CHUNKS,
        seed=SELECTOR_SEED,
        scope="global",
        warmup_steps=1,
        exchange="exact",
    )
    for t in range(3):
        record(f"selector{t}", selector(mine, ml, mr))
    try:
        select_batch(
            shard(batch, rank) if rank else {k: v[:-1] for k, v in mine.items()},
            scores=torch.zeros(N_LOCAL - (rank == 0)),
            scope="global",
            batch_size=2,
            seed=0,
        )
    except ValueError as e:
        out["size_error"] = np.array(str(e))
    np.savez(Path(out_dir) / f"rank{rank}.npz", **out)
    dist.barrier()  # no rank tears gloo down while a peer still has work in flight
    dist.destroy_process_group()


def launch(world: int, tmp_path: Path) -> list[dict[str, np.ndarray]]:
    ranks.launch_ok(__file__, [tmp_path / "rendezvous", tmp_path], world)
    return [ranks.load_npz(tmp_path / f"rank{r}.npz") for r in range(world)]


def interleave(shares: list[np.ndarray]) -> np.ndarray:
    """The global selection from the ranks' shares (rank r holds positions r, r + W, ...)."""
    return np.stack(shares, axis=1).reshape(-1)


@pytest.mark.parametrize("world", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_global_and_local_selection_across_ranks(world, tmp_path):
    results = launch(world, tmp_path)
    _, (learner, reference), losses = super_batch(world)
    expected = jestcore.joint_select_embeddings(
        learner, reference, world * B, n_chunks=CHUNKS, seed=SEED
    ).numpy()
    # every rank computed the same global selection, equal to one process over all examples
    for r in range(world):
        assert results[r]["own_global"].tolist() == expected.tolist(), f"rank {r}"
    for name in ("padded", "exact"):
        shares = [results[r][f"{name}/indices"] for r in range(world)]
        assert interleave(shares).tolist() == expected.tolist(), name
        for r in range(world):  # each rank trains on exactly the examples of its share
            assert results[r][f"{name}/id"].tolist() == shares[r].tolist(), (name, r)
    # per-example losses: independent selection over the concatenation
    scores = losses[0] - losses[1]
    exp = jestcore.independent_select(scores, world * B, seed=SEED).numpy()
    assert interleave([results[r]["losses/indices"] for r in range(world)]).tolist() == exp.tolist()
    # local: each rank selects from its shard with the rank folded into the seed
    local = []
    for r in range(world):
        idx = jestcore.joint_select_embeddings(
            shard(learner, r),
            shard(reference, r),
            B,
            n_chunks=CHUNKS,
            seed=jestcore.fold_in(SEED, r),
        )
        assert results[r]["local/indices"].tolist() == idx.tolist()
        assert results[r]["local/id"].tolist() == (idx + r * N_LOCAL).tolist()
        local.append(tuple(idx.tolist()))
    assert len(set(local)) == world  # rank-distinct seeds draw differently
    # the selector: a uniform warm-up step, then joint steps with fold_in(seed, step)
    n = world * N_LOCAL
    steps = [
        jestcore.independent_select(
            torch.zeros(n), world * B, seed=jestcore.fold_in(SELECTOR_SEED, 0)
        )
    ]
    for t in (1, 2):
        steps.append(
            jestcore.joint_select_embeddings(
                learner,
                reference,
                world * B,
                n_chunks=CHUNKS,
                seed=jestcore.fold_in(SELECTOR_SEED, t),
            )
        )
    for t, exp in enumerate(steps):
        shares = [results[r][f"selector{t}/indices"] for r in range(world)]
        assert interleave(shares).tolist() == exp.tolist(), t
        assert all(
            results[r][f"selector{t}/id"].tolist() == shares[r].tolist() for r in range(world)
        )
    for r in range(world):
        assert "same size on every rank" in str(results[r]["size_error"]), r


if __name__ == "__main__":
    _worker(int(sys.argv[3]), int(sys.argv[4]), sys.argv[1], sys.argv[2])
