"""The reference-embedding cache: round trip, fingerprints, resumption, and refused damage."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from jestcore.adapters.torch import (
    CacheError,
    EmbeddingCache,
    model_fingerprint,
    precompute_reference_embeddings,
)
from test_cache import write_meta

import jestcore

POOL = 50
RTOL = 4 * float(np.finfo(np.float32).eps) ** 0.5  # float32 outputs, recomputed in other shapes
ATOL = 1e-6  # outputs near zero: a few float32 roundings of a 4- or 5-term dot product


def close(a, b):
    torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)


class Reference(torch.nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.image = torch.nn.Linear(4, 3)
        self.text = torch.nn.Linear(5, 3)
        self.register_buffer("log_scale", torch.tensor(2.0))
        self.calls = 0

    def forward(self, image, text):
        self.calls += 1
        return jestcore.PairEmbeddings(
            self.image(image), self.text(text), self.log_scale.exp(), -3.0
        )


def dataset(n: int = POOL, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randperm(10 * n, generator=gen)[:n]  # stable ids, not positions
    return ids, torch.randn(n, 4, generator=gen), torch.randn(n, 5, generator=gen)


def loader(data, batch: int = 8, fail_after: int | None = None):
    ids, image, text = data
    for k, start in enumerate(range(0, ids.shape[0], batch)):
        if fail_after is not None and k == fail_after:
            raise KeyboardInterrupt("simulated crash")
        s = slice(start, start + batch)
        yield ids[s], (image[s], text[s])


def test_round_trip_lookup_by_id_on_a_device(tmp_path):
    data = dataset()
    model = Reference()
    cache = precompute_reference_embeddings(
        model, loader(data), tmp_path / "c", config={"res": 8}, part_size=16, progress=False
    )
    assert len(cache) == POOL and cache.is_pair
    ids, image, text = data
    with torch.no_grad():
        expected = model(image, text)
    pick = torch.tensor([7, 0, 33, 12, 49])
    got = cache.lookup(ids[pick])  # any order, any subset
    assert isinstance(got, jestcore.PairEmbeddings)
    # computed in batches of 8, compared with the whole batch: BLAS kernels differ by shape
    close(got.image, expected.image[pick])
    close(got.text, expected.text[pick])
    # what was stored is what is read back, in any order: bitwise
    everything = cache.lookup(ids)
    assert torch.equal(got.image, everything.image[pick])
    assert torch.equal(got.text, everything.text[pick])
    assert got.scale == pytest.approx(float(np.exp(2.0))) and got.bias == -3.0
    meta = cache.lookup(ids[pick].tolist(), device="meta", dtype=torch.float16)
    assert meta.image.device.type == "meta" and meta.image.dtype == torch.float16
    assert int(ids[3]) in cache and -1 not in cache
    # reopened with the model (fingerprint recomputed) or with the fingerprint string
    again = EmbeddingCache(tmp_path / "c", model=model, config={"res": 8})
    assert torch.equal(again.lookup(ids).image, everything.image)
    fp = model_fingerprint(model, config={"res": 8})
    assert EmbeddingCache(tmp_path / "c", fingerprint=fp).fingerprint == fp
    assert not (tmp_path / "c" / "parts").exists()
    # the finished cache is returned as is: no forward pass
    calls = model.calls
    precompute_reference_embeddings(
        model, loader(data), tmp_path / "c", config={"res": 8}, progress=False
    )
    assert model.calls == calls


def test_per_example_values_and_float16_storage(tmp_path):
    data = dataset(20)
    model = Reference()

    def losses(m, batch):
        e = m(*batch[1])
        return torch.nn.functional.softplus(-(e.scale * (e.image * e.text).sum(1) + e.bias))

    cache = precompute_reference_embeddings(
        model, loader(data), tmp_path / "v", forward=losses, dtype=torch.float16, progress=False
    )
    assert not cache.is_pair and cache.dtype == torch.float16
    with torch.no_grad():  # batch by batch, as precompute ran it (the same shapes, the same bits)
        expected = torch.cat([losses(model, b).to(torch.float16) for b in loader(data)])
    assert torch.equal(cache.lookup(data[0]), expected)


def test_fingerprint_refuses_other_weights_config_and_dtype(tmp_path):
    data = dataset(16)
    model = Reference()
    precompute_reference_embeddings(model, loader(data), tmp_path / "c", progress=False)
    other = Reference(seed=1)
    for kwargs in (
        {"model": other},
        {"model": model, "config": {"res": 4}},
        {"model": model, "dtype": torch.float64},
        {"fingerprint": "0" * 64},
    ):
        with pytest.raises(CacheError, match="different model, config or dtype"):
            EmbeddingCache(tmp_path / "c", **kwargs)
    with pytest.raises(CacheError, match="different model"):
        precompute_reference_embeddings(other, loader(data), tmp_path / "c", progress=False)
    with pytest.raises(TypeError, match="exactly one of fingerprint"):
        EmbeddingCache(tmp_path / "c")
    assert model_fingerprint(model) != model_fingerprint(model, dtype=torch.float16)
    with pytest.raises(TypeError, match="no bfloat16"):
        model_fingerprint(model, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="JSON-serialisable"):
        model_fingerprint(model, config={"f": object()})
    fresh = precompute_reference_embeddings(
        other, loader(data), tmp_path / "c", overwrite=True, progress=False
    )
    assert fresh.fingerprint == model_fingerprint(other)


def test_missing_ids_are_named(tmp_path):
    data = dataset(16)
    cache = precompute_reference_embeddings(
        Reference(), loader(data), tmp_path / "c", progress=False
    )
    absent = int(data[0].max()) + 1
    with pytest.raises(KeyError, match=rf"1 of 3 ids are not in the cache .*\[{absent}\]"):
        cache.lookup([int(data[0][0]), absent, int(data[0][1])])
    with pytest.raises(TypeError, match="integer example ids"):
        cache.lookup(torch.zeros(2))


def test_interrupted_precompute_resumes_without_redoing_parts(tmp_path):
    data = dataset()
    folder = tmp_path / "c"
    model = Reference()
    with pytest.raises(KeyboardInterrupt):
        precompute_reference_embeddings(
            model, loader(data, fail_after=5), folder, part_size=16, progress=False
        )
    assert not (folder / "meta.json").exists()  # never mistaken for a finished cache
    with pytest.raises(CacheError, match=r"metadata .* is missing"):
        EmbeddingCache(folder, model=model)
    # 5 batches of 8 ran; parts of >= 16 were flushed after batches 2 and 4: 32 examples kept
    assert len(list((folder / "parts").glob("part-*.npz"))) == 2
    with pytest.raises(CacheError, match="partial cache made with fingerprint"):
        precompute_reference_embeddings(Reference(seed=3), loader(data), folder, progress=False)
    model.calls = 0
    cache = precompute_reference_embeddings(
        model, loader(data), folder, part_size=16, progress=False
    )
    assert model.calls == 3  # batches 4..6 only (18 examples)
    uninterrupted = precompute_reference_embeddings(
        Reference(), loader(data), tmp_path / "u", progress=False
    )
    # both computed in the same batches of 8 (the same calls on the same inputs): bitwise
    for a, b in zip(cache.lookup(data[0]), uninterrupted.lookup(data[0]), strict=True):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))


def test_a_damaged_part_is_recomputed(tmp_path):
    data = dataset(32)
    folder = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        precompute_reference_embeddings(
            Reference(), loader(data, fail_after=3), folder, part_size=8, progress=False
        )
    part = folder / "parts" / "part-000001.npz"
    raw = bytearray(part.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    part.write_bytes(raw)
    model = Reference()
    cache = precompute_reference_embeddings(
        model, loader(data), folder, part_size=8, progress=False
    )
    assert model.calls == 2  # the damaged part's batch and the never-computed last one
    with torch.no_grad():  # batch by batch, as precompute ran it (the same rounding)
        expected = torch.cat([model.image(data[1][s : s + 8]) for s in range(0, 32, 8)])
    assert torch.equal(cache.lookup(data[0]).image, expected)


def test_duplicate_ids_are_refused(tmp_path):
    ids, image, text = dataset(16)
    ids[9] = ids[2]
    with pytest.raises(CacheError, match="unique"):
        precompute_reference_embeddings(
            Reference(), loader((ids, image, text)), tmp_path / "c", progress=False
        )


@pytest.fixture
def finished(tmp_path):
    data = dataset(24)
    model = Reference()
    precompute_reference_embeddings(model, loader(data), tmp_path / "c", progress=False)
    return tmp_path / "c", model


def test_truncated_file_is_refused(finished):
    folder, model = finished
    f = folder / "image.npy"
    f.write_bytes(f.read_bytes()[:-40])
    with pytest.raises(CacheError, match=r"image\.npy is truncated or corrupted"):
        EmbeddingCache(folder, model=model)


def test_corrupted_byte_is_refused_by_the_checksum(finished):
    folder, model = finished
    f = folder / "text.npy"
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0x01
    f.write_bytes(raw)
    with pytest.raises(CacheError, match=r"text\.npy is corrupted: its sha256"):
        EmbeddingCache(folder, model=model)
    EmbeddingCache(folder, model=model, verify=False)  # opt-out: shapes only


def test_missing_file_and_damaged_metadata_are_refused(finished):
    folder, model = finished
    (folder / "ids.npy").rename(folder / "ids.bak")
    with pytest.raises(CacheError, match=r"ids\.npy is missing"):
        EmbeddingCache(folder, model=model)
    (folder / "ids.bak").rename(folder / "ids.npy")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(CacheError, match="version"):
        EmbeddingCache(folder, model=model)
    (folder / "meta.json").write_text(json.dumps(meta)[:-10])
    with pytest.raises(CacheError, match="not valid JSON"):
        EmbeddingCache(folder, model=model)
    meta["files"]["image"]["shape"] = [25, 3]
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match=r"meta\.json: field 'files\.image\.shape'"):
        EmbeddingCache(folder, model=model)
    meta["files"]["image"]["shape"] = [24, 4]  # a consistent edit: the array itself disagrees
    meta["files"]["text"]["shape"] = [24, 4]
    write_meta(folder, meta)
    with pytest.raises(CacheError, match=r"image\.npy has shape \[24, 3\], expected \[24, 4\]"):
        EmbeddingCache(folder, model=model)


def test_object_arrays_are_never_unpickled(finished):
    folder, model = finished
    meta = json.loads((folder / "meta.json").read_text())
    np.save(folder / "image.npy", np.array([{"x": 1}] * 24, dtype=object), allow_pickle=True)
    with pytest.raises(CacheError, match=r"image\.npy is truncated or corrupted.*Python objects"):
        EmbeddingCache(folder, model=model)
    assert json.loads((folder / "meta.json").read_text()) == meta


def test_a_part_overwritten_by_another_writer_is_caught_before_the_commit(tmp_path):
    # What a second writer of the same folder did: replace a finished part with its own (a
    # valid part with a consistent record, but other examples). Merging it under the ids this
    # writer recorded would commit a cache that verifies but holds other examples' rows.
    data = dataset(32)
    folder = tmp_path / "c"
    model = Reference()

    def other_writers_part():
        ids, image, text = (t[16:24] for t in data)
        with torch.no_grad():
            e = model(image, text)
        part = folder / "parts" / "part-000000.npz"
        np.savez(part, ids=ids.numpy(), image=e.image.numpy(), text=e.text.numpy())
        ids_sha = hashlib.sha256(ids.numpy().astype("<i8").tobytes()).hexdigest()
        record = {"sha256": hashlib.sha256(part.read_bytes()).hexdigest(), "n": 8}
        part.with_suffix(".json").write_text(json.dumps({**record, "ids_sha256": ids_sha}))

    def batches():
        for k, batch in enumerate(loader(data)):
            if k == 1:  # part 0 (batch 0) is on disk
                other_writers_part()
            yield batch

    with pytest.raises(CacheError, match=r"part-000000\.npz no longer holds the ids recorded"):
        precompute_reference_embeddings(model, batches(), folder, part_size=8, progress=False)
    assert not (folder / "meta.json").exists()  # nothing committed
    # a rerun keeps the valid parts (the replaced one holds batch 2, so the later part of
    # batch 2 repeats its ids and is discarded) and recomputes batch 0 only
    model.calls = 0
    cache = precompute_reference_embeddings(
        model, loader(data), folder, part_size=8, progress=False
    )
    assert model.calls == 1
    with torch.no_grad():  # batch by batch, as precompute ran it (the same rounding)
        expected = torch.cat([model.image(data[1][s : s + 8]) for s in range(0, 32, 8)])
    assert torch.equal(cache.lookup(data[0]).image, expected)


# ----------------------------------------------------------------------------- several ranks


def _shards_rank(out_dir: str, rank: int, world: int) -> None:
    """One rank of the multi-rank recipe: each rank caches its shard in its own folder."""
    from datetime import timedelta
    from pathlib import Path

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{Path(out_dir) / 'rendezvous'}", rank=rank, world_size=world,
        timeout=timedelta(seconds=60),
    )  # fmt: skip
    root = Path(out_dir) / "cache"
    ids, image, text = dataset()
    mine = slice(rank, None, world)  # this rank's share of the pool
    model = Reference()
    precompute_reference_embeddings(
        model, loader((ids[mine], image[mine], text[mine])), root / f"rank-{rank}", progress=False
    )
    dist.barrier()  # every shard is committed
    cache = EmbeddingCache([root / f"rank-{r}" for r in range(world)], model=model)
    got = cache.lookup(ids)
    np.savez(Path(out_dir) / f"rank{rank}.npz", image=got.image.numpy(), text=got.text.numpy())
    dist.barrier()
    dist.destroy_process_group()


def _one_folder_rank(out_dir: str, rank: int, world: int) -> None:
    """A rank that caches its shard into the folder every rank uses (what not to do)."""
    import time
    from pathlib import Path

    torch.set_num_threads(1)
    ids, image, text = dataset()
    mine = slice(rank, None, world)

    def slow_batches():
        for batch in loader((ids[mine], image[mine], text[mine])):
            time.sleep(0.05)  # the writers overlap
            yield batch

    cache = precompute_reference_embeddings(
        Reference(), slow_batches(), Path(out_dir) / "shared", part_size=8, progress=False,
        timeout=120,
    )  # fmt: skip
    np.savez(Path(out_dir) / f"rank{rank}.npz", ids=cache.ids, image=cache.lookup(cache.ids).image)


def test_two_ranks_build_one_cache_from_their_shards(tmp_path):
    import ranks

    ranks.launch_ok(__file__, ["shards", tmp_path], 2)
    r0, r1 = (ranks.load_npz(tmp_path / f"rank{r}.npz") for r in range(2))
    for k in ("image", "text"):  # the same stored rows, read back by both ranks: bitwise
        assert np.array_equal(r0[k], r1[k])
    _, image, text = dataset()
    with torch.no_grad():  # one process, whole batch: other BLAS shapes, so a tolerance
        expected = Reference()(image, text)
    close(torch.from_numpy(r0["image"]), expected.image)
    close(torch.from_numpy(r0["text"]), expected.text)
    shards = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert shards == ["rank-0", "rank-1"]


def test_two_writers_of_one_folder_take_turns(tmp_path):
    # Without the lock, two writers of one folder interleaved their parts: a cache that
    # verified but held other examples' rows, or a raw FileNotFoundError in one writer.
    import ranks

    ranks.launch_ok(__file__, ["one-folder", tmp_path], 2)
    r0, r1 = (ranks.load_npz(tmp_path / f"rank{r}.npz") for r in range(2))
    # the second writer waited for the first, then found the finished cache and returned it
    assert np.array_equal(r0["ids"], r1["ids"]) and np.array_equal(r0["image"], r1["image"])
    ids, image, _ = dataset()
    shards = [sorted(ids[r::2].tolist()) for r in range(2)]
    assert r0["ids"].tolist() in shards, "the cache holds exactly one writer's examples"
    row_of = {int(i): k for k, i in enumerate(ids)}
    rows = [row_of[int(i)] for i in r0["ids"]]
    with torch.no_grad():  # each row is its own example's embedding
        expected = Reference().image(image[rows])
    close(torch.from_numpy(r0["image"]), expected)
    cache = EmbeddingCache(tmp_path / "shared", model=Reference())
    assert torch.equal(cache.lookup(r0["ids"]).image, torch.from_numpy(r0["image"]))


if __name__ == "__main__":
    import sys

    role = {"shards": _shards_rank, "one-folder": _one_folder_rank}[sys.argv[1]]
    role(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
