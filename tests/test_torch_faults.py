"""Faults in the PyTorch adapter: killed cache writers, damaged or planted cache files, failing
or disagreeing ranks.

Subprocesses run this file (``python test_torch_faults.py ROLE ...``): a cache writer that the
test kills with ``SIGKILL`` at a chosen point, and the ranks of a gloo process group. Every
subprocess has a hard timeout and collectives have short timeouts, so a fault can never hang
the suite.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import ranks
import torch
from jestcore.adapters.torch import (
    CacheError,
    EmbeddingCache,
    precompute_reference_embeddings,
)
from test_cache import write_meta

import jestcore

HERE = Path(__file__).resolve()
ADAPTERS = HERE.parents[1] / "adapters"
#: The modules that read caches and checkpoints: the neutral storage and the framework adapters.
READERS = [
    ADAPTERS / "cache.py",
    *(ADAPTERS / "torch").glob("*.py"),
    *(ADAPTERS / "jax").glob("*.py"),
]
PROCESS_TIMEOUT_S = 180  # a whole subprocess; collectives time out much sooner
POOL, BATCH, PART = 40, 8, 8  # 5 batches, one part per batch


# ----------------------------------------------------------------------------- cache writers


class Reference(torch.nn.Module):
    """A small frozen reference; ``seed`` 0 made the previous cache, ``seed`` 1 replaces it."""

    def __init__(self, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.image = torch.nn.Parameter(torch.randn(4, 3, generator=gen))
        self.text = torch.nn.Parameter(torch.randn(5, 3, generator=gen))
        self.calls = 0

    def forward(self, image, text):
        self.calls += 1
        return jestcore.PairEmbeddings(image @ self.image, text @ self.text, 7.0, -2.0)


def dataset():
    gen = torch.Generator().manual_seed(11)
    ids = torch.randperm(1000, generator=gen)[:POOL]
    return ids, torch.randn(POOL, 4, generator=gen), torch.randn(POOL, 5, generator=gen)


def loader(stall_after: int | None = None, marker: Path | None = None):
    """The dataset in batches of 8; with ``stall_after``, signals ``marker`` and blocks there."""
    ids, image, text = dataset()
    for k, start in enumerate(range(0, POOL, BATCH)):
        if k == stall_after:
            assert marker is not None
            marker.touch()
            time.sleep(10 * PROCESS_TIMEOUT_S)
        s = slice(start, start + BATCH)
        yield ids[s], (image[s], text[s])


def precompute(folder: Path, seed: int, **kwargs):
    model = Reference(seed)
    cache = precompute_reference_embeddings(
        model, kwargs.pop("batches", None) or loader(), folder, part_size=PART, progress=False,
        **kwargs,
    )  # fmt: skip
    return cache, model


def _writer(folder: str, mode: str, marker: str) -> None:
    """Replaces the cache in ``folder`` by model 1's, stalling at ``mode`` until killed."""
    import jestcore.adapters.cache as cache_module

    torch.set_num_threads(1)
    stall = Path(marker)

    def block() -> None:
        stall.touch()
        time.sleep(10 * PROCESS_TIMEOUT_S)

    batches = None
    if mode == "between-batches":  # after 3 batches: 3 parts are finished
        batches = loader(stall_after=3, marker=stall)
    elif mode == "mid-part":  # half of the 3rd part's bytes are on disk
        real_savez, count = np.savez, [0]

        def savez(f, **arrays):
            count[0] += 1
            if count[0] < 3:
                return real_savez(f, **arrays)
            import io

            buf = io.BytesIO()
            real_savez(buf, **arrays)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.fsync(f.fileno())
            block()

        cache_module.np.savez = savez
    elif mode == "mid-commit":  # the new arrays are all written; meta.json half written
        real_atomic = cache_module.atomic_write

        def atomic_write(path, write):
            if path.name != "meta.json":
                return real_atomic(path, write)
            import io

            buf = io.BytesIO()
            write(buf)
            with open(path.with_name(f".{path.name}.tmp-{os.getpid()}"), "wb") as f:
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                os.fsync(f.fileno())
            block()

        cache_module.atomic_write = atomic_write
    else:
        raise ValueError(mode)
    precompute(Path(folder), 1, overwrite=True, batches=batches)
    raise AssertionError("the writer should have been killed before finishing")


@contextlib.contextmanager
def stalled_writer(folder: Path, mode: str, marker: Path) -> Iterator[subprocess.Popen[str]]:
    """A writer subprocess stalled at ``mode``; killed with SIGKILL when the block ends."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE), "writer", str(folder), mode, str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the writer exited early:\n{proc.communicate()[0]}")
            if time.monotonic() > deadline:
                raise AssertionError("the writer never reached its stall point")
            time.sleep(0.05)
        yield proc
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def kill_writer_at(folder: Path, mode: str, tmp_path: Path) -> None:
    """Starts a writer subprocess, waits until it stalls at ``mode``, kills it with SIGKILL."""
    with stalled_writer(folder, mode, tmp_path / f"stalled-{mode}"):
        pass


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file in the folder (the parts folder included)."""
    return {
        str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


def assert_same_cache(a: EmbeddingCache, b: EmbeddingCache) -> None:
    ids = dataset()[0]
    for x, y in zip(a.lookup(ids), b.lookup(ids), strict=True):
        assert torch.equal(torch.as_tensor(x), torch.as_tensor(y))


@pytest.mark.parametrize("mode", ["between-batches", "mid-part", "mid-commit"])
def test_a_writer_killed_mid_write_leaves_the_previous_cache_intact(mode, tmp_path):
    folder = tmp_path / "cache"
    old_cache, old_model = precompute(folder, 0)
    before = snapshot(folder)
    old_rows = old_cache.lookup(dataset()[0])
    kill_writer_at(folder, mode, tmp_path)
    # the previous cache is still complete, loadable and identical
    after = snapshot(folder)
    assert {k: after[k] for k in before} == before
    again = EmbeddingCache(folder, model=old_model)
    for x, y in zip(again.lookup(dataset()[0]), old_rows, strict=True):
        assert torch.equal(torch.as_tensor(x), torch.as_tensor(y))
    # and it is not the new model's: refused by fingerprint, also to a writer without overwrite
    with pytest.raises(CacheError, match="different model, config or dtype"):
        EmbeddingCache(folder, model=Reference(1))
    with pytest.raises(CacheError, match="different model, config or dtype"):
        precompute(folder, 1)
    # resuming completes the new cache from the writer's finished parts
    resumed, new_model = precompute(folder, 1, overwrite=True)
    finished_parts = {"between-batches": 3, "mid-part": 2, "mid-commit": 5}[mode]
    assert new_model.calls == POOL // BATCH - finished_parts
    uninterrupted, _ = precompute(tmp_path / "fresh", 1)
    assert_same_cache(resumed, uninterrupted)
    # the commit replaced the previous cache: its files, the parts and temporaries are gone
    files = {f.name for f in folder.iterdir()}
    assert files == {"meta.json", *(e["file"] for e in resumed.meta["files"].values())}
    with pytest.raises(CacheError, match="different model, config or dtype"):
        EmbeddingCache(folder, model=old_model)


def test_a_first_writer_killed_mid_part_leaves_no_cache_and_resumes(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    kill_writer_at(folder, "mid-part", tmp_path)
    assert any(f.name.startswith(".part-") for f in (folder / "parts").iterdir())  # half a part
    with pytest.raises(CacheError, match=r"metadata .*meta\.json is missing"):
        EmbeddingCache(folder, model=Reference(1))
    cache, model = precompute(folder, 1)
    assert model.calls == POOL // BATCH - 2
    assert_same_cache(cache, precompute(tmp_path / "fresh", 1)[0])
    assert not (folder / "parts").exists()
    assert not [f for f in folder.iterdir() if ".tmp-" in f.name]


def test_a_second_writer_is_refused_while_the_first_writes_and_resumes_after_its_death(tmp_path):
    folder = tmp_path / "cache"
    old_cache, old_model = precompute(folder, 0)
    before = snapshot(folder)
    # the first writer holds the lock, with 3 parts written
    with stalled_writer(folder, "between-batches", tmp_path / "stalled") as proc:
        holder = rf"another writer \(pid {proc.pid} on host "
        for kwargs in ({}, {"timeout": 0.3}):
            with pytest.raises(CacheError, match=holder):
                precompute(folder, 1, overwrite=True, **kwargs)
        # a call that finds a finished cache to keep only reads it: it needs no lock
        assert_same_cache(precompute(folder, 0)[0], old_cache)
        # the second writers touched nothing: the first writer's parts and the cache are as
        # they were, and the cache still loads
        parts = {k: v for k, v in snapshot(folder).items() if k.startswith("parts/")}
        assert len([k for k in parts if k.endswith(".npz")]) == 3
        assert {k: v for k, v in snapshot(folder).items() if k in before} == before
        assert_same_cache(EmbeddingCache(folder, model=old_model), old_cache)
    # the dead writer's lock is taken over at once; its parts are resumed
    resumed, model = precompute(folder, 1, overwrite=True)
    assert model.calls == POOL // BATCH - 3
    assert_same_cache(resumed, precompute(tmp_path / "fresh", 1)[0])
    assert not (folder / ".lock").exists()


@pytest.fixture
def finished(tmp_path):
    folder = tmp_path / "cache"
    _, model = precompute(folder, 0)
    return folder, model


def cache_files(folder: Path) -> list[str]:
    meta = json.loads((folder / "meta.json").read_text())
    return sorted(e["file"] for e in meta["files"].values())


@pytest.mark.parametrize("damage", ["truncate-end", "truncate-header", "flip-data", "flip-header"])
def test_every_damaged_file_is_refused_naming_it(finished, damage):
    folder, model = finished
    for name in cache_files(folder):
        f = folder / name
        original = f.read_bytes()
        raw = bytearray(original)
        if damage == "truncate-end":
            raw = raw[:-3]
        elif damage == "truncate-header":
            raw = raw[:40]
        elif damage == "flip-data":
            raw[-1] ^= 0x10
        else:
            raw[30] ^= 0x01  # inside the .npy header's dict
        f.write_bytes(bytes(raw))
        with pytest.raises(CacheError, match=re.escape(name) + " (is|has)"):
            EmbeddingCache(folder, model=model)
        f.write_bytes(original)
    EmbeddingCache(folder, model=model)  # restored: loads again
    meta = folder / "meta.json"
    meta.write_text(meta.read_text()[:-7])
    with pytest.raises(CacheError, match=r"meta\.json is not valid JSON"):
        EmbeddingCache(folder, model=model)


class _Touch:
    """Unpickling this creates ``path``: proof that a file was unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_planted_pickles_are_never_unpickled(finished, tmp_path, caplog):
    folder, model = finished
    proof = tmp_path / "unpickled"
    planted = np.array([_Touch(proof)] * POOL, dtype=object)
    pickle.loads(pickle.dumps(planted[:1]))  # the proof works: unpickling touches the file
    assert proof.exists()
    proof.unlink()
    # a finished cache's array replaced by an object array, its checksum updated to match
    meta_file = folder / "meta.json"
    meta = json.loads(meta_file.read_text())
    target = folder / meta["files"]["image"]["file"]
    np.save(target, planted, allow_pickle=True)
    meta["files"]["image"]["sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
    write_meta(folder, meta)  # its checksum recomputed too
    with pytest.raises(CacheError, match=rf"{target.name}.*Python objects"):
        EmbeddingCache(folder, model=model)
    assert not proof.exists()
    # a part of a cache being written: a planted object part with a valid record
    partial = tmp_path / "partial"
    with pytest.raises(KeyboardInterrupt):

        def stop_after_two():
            for k, batch in enumerate(loader()):
                if k == 2:
                    raise KeyboardInterrupt
                yield batch

        precompute(partial, 0, batches=stop_after_two())
    part = partial / "parts" / "part-000001.npz"
    np.savez(part, ids=planted, image=planted, text=planted)
    sha = hashlib.sha256(part.read_bytes()).hexdigest()
    (partial / "parts" / "part-000001.json").write_text(json.dumps({"sha256": sha, "n": BATCH}))
    cache, resumed_model = precompute(partial, 0)
    assert not proof.exists()
    assert resumed_model.calls == POOL // BATCH - 1  # the planted part was discarded, redone
    assert "discarding damaged cache part" in caplog.text and "part-000001.npz" in caplog.text
    assert_same_cache(cache, precompute(tmp_path / "fresh", 0)[0])


def _load_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "load"
    ]


def test_no_adapter_module_can_unpickle():
    # Every np.load passes allow_pickle=False, and nothing imports pickle or calls torch.load.
    checked = 0
    for path in sorted(READERS):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not {"pickle", "dill", "cloudpickle", "joblib"} & set(names), path.name
        for call in _load_calls(tree):
            owner = ast.unparse(call.func.value)
            assert owner != "torch", f"{path.name}:{call.lineno}: torch.load"
            if owner in ("np", "numpy"):
                flags = {k.arg: ast.unparse(k.value) for k in call.keywords}
                assert flags.get("allow_pickle") == "False", f"{path.name}:{call.lineno}"
                checked += 1
        assert "all_gather_object" not in path.read_text(), path.name  # pickles its payload
    assert checked >= 4  # the cache's loads were found


# ----------------------------------------------------------------------------- failing ranks

N_LOCAL, B, D, CHUNKS, SEED = 12, 3, 4, 3, 5


def rank_inputs(rank: int, world: int = 2):
    """Rank ``rank``'s shard of a global super-batch (built identically on every rank)."""
    gen = torch.Generator().manual_seed(0)
    n = world * N_LOCAL
    models = [
        jestcore.PairEmbeddings(
            torch.randn(n, D, generator=gen), torch.randn(n, D, generator=gen), 8.0, -4.0
        )
        for _ in range(2)
    ]
    s = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
    batch = {"id": torch.arange(n)[s]}
    shard = [m._replace(image=m.image[s], text=m.text[s]) for m in models]
    return batch, shard[0], shard[1], models


def _scenarios(rank: int):
    """Each a global selection with a fault on one rank or both; every rank must raise."""
    from jestcore.adapters.torch import JESTSelector, select_batch

    batch, learner, reference, _ = rank_inputs(rank)
    kw = {"batch_size": B, "n_chunks": CHUNKS, "seed": SEED, "scope": "global"}
    nan = learner.image.clone()
    nan[2, 1] = float("nan")
    inf = reference.text.clone()
    inf[0, 3] = -float("inf")
    losses = torch.rand(N_LOCAL)
    state = JESTSelector(batch_size=B, n_chunks=CHUNKS, scope="global").state_dict()
    state["step"] = rank  # rank 1 resumed from the wrong checkpoint

    def selector():
        sel = JESTSelector(batch_size=B, n_chunks=CHUNKS, scope="global")
        sel.load_state_dict(state)
        return sel(batch, learner, reference)

    return {
        "nan on rank 1": lambda: select_batch(
            batch, learner._replace(image=nan) if rank == 1 else learner, reference, **kw
        ),
        "integer losses on rank 0": lambda: select_batch(
            batch, losses.long() if rank == 0 else losses, losses, **kw
        ),
        "both ranks fail": lambda: select_batch(
            batch,
            learner,
            reference._replace(text=inf) if rank == 0 else reference,
            **kw | ({"n_chunks": 0} if rank == 1 else {}),
        ),
        "seeds differ": lambda: select_batch(batch, learner, reference, **kw | {"seed": rank + 1}),
        "n_chunks differ": lambda: select_batch(
            batch, learner, reference, **kw | {"n_chunks": 2 + rank}
        ),
        "scales differ": lambda: select_batch(
            batch, learner._replace(scale=8.0 + rank), reference, **kw
        ),
        "losses differ": lambda: select_batch(
            batch, learner, reference, **kw | {"loss": ("sigmoid", "softmax")[rank]}
        ),
        "batch layouts differ": lambda: select_batch(
            batch | ({"extra": torch.zeros(N_LOCAL, 2)} if rank else {}), learner, reference, **kw
        ),
        "selector steps differ": selector,
    }


def _rank(init_file: str, out_dir: str, rank: int, world: int) -> None:
    import torch.distributed as dist
    from jestcore.adapters.torch import select_batch

    ranks.init_gloo(init_file, rank, world, timeout_s=30)
    out: dict[str, np.ndarray] = {}
    for name, run in _scenarios(rank).items():
        try:
            run()
            out[name] = np.array("no error")
        except Exception as e:
            out[name] = np.array(f"{type(e).__name__}: {e}")
    # after all of these, the process group still works: no rank was left in a collective
    batch, learner, reference, _ = rank_inputs(rank)
    kw = {"batch_size": B, "n_chunks": CHUNKS, "seed": SEED, "scope": "global"}
    out["recovered"] = select_batch(batch, learner, reference, **kw).indices.numpy()
    # a rank that never reaches the selection: the group's timeout bounds the wait
    short = dist.new_group([0, 1], timeout=timedelta(seconds=3))
    done = Path(out_dir) / "timeout-seen"
    if rank == 0:
        try:
            select_batch(batch, learner, reference, group=short, **kw)
            out["absent rank"] = np.array("no error")
        except RuntimeError as e:
            out["absent rank"] = np.array(f"RuntimeError: {type(e).__name__}: {e}")
        done.touch()
        # a rank that dies: the connection closes and the collective fails
        try:
            select_batch(batch, learner, reference, **kw)
            out["dead rank"] = np.array("no error")
        except RuntimeError as e:
            out["dead rank"] = np.array(f"RuntimeError: {type(e).__name__}: {e}")
    np.savez(Path(out_dir) / f"rank{rank}.npz", **out)
    if rank == 1:
        deadline = time.monotonic() + 60
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os._exit(3)  # dies without leaving the group
    os._exit(0)  # the group is broken: skip destroy_process_group


def launch_ranks(tmp_path: Path, world: int = 2) -> tuple[list[int], list[dict[str, np.ndarray]]]:
    done = ranks.launch(HERE, ["rank", tmp_path / "rendezvous", tmp_path], world)
    results = []
    for r, (_, log) in enumerate(done):
        assert (tmp_path / f"rank{r}.npz").exists(), f"rank {r} wrote no results:\n{log}"
        results.append(ranks.load_npz(tmp_path / f"rank{r}.npz"))
    return [code for code, _ in done], results


def test_a_failing_or_disagreeing_rank_fails_every_rank(tmp_path):
    codes, (r0, r1) = launch_ranks(tmp_path)
    assert codes == [0, 3]
    expected = {
        "nan on rank 1": (
            'ValueError: scope="global": rank 1 of 2 refused its inputs, so every rank stops: '
            "ValueError: learner.image must be finite, but learner.image[2, 1] is nan"
        ),
        "integer losses on rank 0": (
            'TypeError: scope="global": rank 0 of 2 refused its inputs, so every rank stops: '
            "TypeError: learner must have a real floating dtype, got torch.int64"
        ),
        "both ranks fail": (
            'ValueError: scope="global": rank 0 of 2 refused its inputs, so every rank stops: '
            "ValueError: reference.text must be finite, but reference.text[0, 3] is -inf "
            "(rank 1 failed too)"
        ),
        "seeds differ": (
            'ValueError: scope="global" needs the same seed on every rank, got rank 0: 1, rank 1: 2'
        ),
        "n_chunks differ": (
            'ValueError: scope="global" needs the same n_chunks on every rank, got rank 0: 2, '
            "rank 1: 3"
        ),
        "scales differ": (
            'ValueError: scope="global" needs the same learner.scale on every rank, got '
            "rank 0: 8.0, rank 1: 9.0"
        ),
        "losses differ": (
            'ValueError: scope="global" needs the same loss on every rank, got '
            "rank 0: 'sigmoid', rank 1: 'softmax'"
        ),
    }
    for name, message in expected.items():
        assert str(r0[name]) == str(r1[name]) == message, name
    layout = str(r0["batch layouts differ"])
    assert layout == str(r1["batch layouts differ"])
    assert layout.startswith('ValueError: scope="global" needs the same batch structure')
    steps = str(r0["selector steps differ"])
    assert steps == str(r1["selector steps differ"])
    assert steps.startswith('ValueError: scope="global" needs the same seed on every rank, got')
    seeds = [jestcore.fold_in(0, t) for t in (0, 1)]
    assert steps.endswith(f"rank 0: {seeds[0]}, rank 1: {seeds[1]}")
    # the group still works after the refusals: the next selection is the exact global one
    _, _, _, (learner, reference) = rank_inputs(0)
    exp = jestcore.joint_select_embeddings(learner, reference, 2 * B, n_chunks=CHUNKS, seed=SEED)
    got = np.stack([r0["recovered"], r1["recovered"]], axis=1).reshape(-1)
    assert got.tolist() == exp.tolist()
    # a rank that never arrives, or dies, ends the wait with an error (bounded by the timeout)
    assert str(r0["absent rank"]).startswith("RuntimeError"), str(r0["absent rank"])
    assert str(r0["dead rank"]).startswith("RuntimeError"), str(r0["dead rank"])


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        _writer(*sys.argv[2:5])
    elif sys.argv[1] == "rank":
        _rank(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
