"""The framework-neutral cache storage: writing from NumPy, the writer's lock, verified metadata,
shard folders opened as one, and the one atomic writer."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from jestcore.adapters.cache import (
    ArrayCache,
    CacheError,
    atomic_write_json,
    cache_lock,
    write_cache,
)

import jestcore

FP = "reference-v1"


def write_meta(folder: Path, meta: dict) -> None:
    """Writes ``meta`` as ``folder/meta.json`` with a matching checksum: a deliberate hand edit."""
    body = {k: v for k, v in meta.items() if k != "checksum"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    meta = {**body, "checksum": hashlib.sha256(canonical).hexdigest()}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def pair(n: int = 12, d: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.permutation(10 * n)[:n]
    image = rng.normal(size=(n, d)).astype(np.float32)
    text = rng.normal(size=(n, d)).astype(np.float32)
    return ids, jestcore.PairEmbeddings(image, text, 10.0, -10.0)


def test_write_and_look_up_numpy_arrays(tmp_path):
    ids, emb = pair()
    cache = write_cache(tmp_path / "c", ids, emb, fingerprint=FP, config={"res": 8})
    assert isinstance(cache, ArrayCache) and cache.is_pair and len(cache) == ids.size
    pick = ids[[5, 0, 11, 3]]
    got = cache.lookup(pick)
    # what was stored is what is read back: bitwise
    assert np.array_equal(got.image, emb.image[[5, 0, 11, 3]])
    assert np.array_equal(got.text, emb.text[[5, 0, 11, 3]])
    assert (got.scale, got.bias) == (10.0, -10.0)
    assert cache.dtype == np.float32 and int(ids[2]) in cache and -1 not in cache
    assert not (tmp_path / "c" / ".lock").exists() and not (tmp_path / "c" / "parts").exists()
    # per-example values, stored as float16
    values = np.linspace(0, 1, ids.size)
    v = write_cache(tmp_path / "v", ids, values, fingerprint=FP, dtype="float16")
    assert np.array_equal(v.lookup(ids), values.astype(np.float16))
    # a finished cache of this fingerprint is kept; another fingerprint is refused
    kept = write_cache(tmp_path / "v", ids, values * 2, fingerprint=FP)
    assert np.array_equal(kept.lookup(ids), values.astype(np.float16))
    with pytest.raises(CacheError, match="different model, config or dtype"):
        write_cache(tmp_path / "v", ids, values, fingerprint="other")
    with pytest.raises(CacheError, match="different model, config or dtype"):
        ArrayCache(tmp_path / "v", fingerprint="other")
    again = write_cache(tmp_path / "v", ids, values * 2, fingerprint="other", overwrite=True)
    assert again.dtype == np.float64 and np.array_equal(again.lookup(ids), values * 2)


def test_bad_arguments_are_refused_before_any_work(tmp_path):
    ids, emb = pair()
    folder = tmp_path / "c"
    with pytest.raises(ValueError, match="ids has 11 ids for a batch of 12"):
        write_cache(folder, ids[:-1], emb, fingerprint=FP)
    with pytest.raises(TypeError, match="no bfloat16"):
        write_cache(folder, ids, emb.image.astype(np.int32), fingerprint=FP)
    with pytest.raises(TypeError, match="fingerprint must be a non-empty str"):
        write_cache(folder, ids, emb, fingerprint="")
    with pytest.raises(ValueError, match=r"outputs\.scale must be a finite real scalar"):
        write_cache(folder, ids, emb._replace(scale=float("nan")), fingerprint=FP)
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds >= 0"):
        write_cache(folder, ids, emb, fingerprint=FP, timeout=-1)
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike folder"):
        write_cache(3, ids, emb, fingerprint=FP)
    with pytest.raises(TypeError, match="model must be a str"):
        write_cache(folder, ids, emb, fingerprint=FP, model=object())
    with pytest.raises(TypeError, match="a non-empty list of them"):
        ArrayCache([], fingerprint=FP)
    assert not folder.exists()
    ids[3] = ids[4]
    with pytest.raises(CacheError, match="unique"):
        write_cache(folder, ids, emb, fingerprint=FP)


# ----------------------------------------------------------------------------- the lock


def test_a_second_writer_is_refused_naming_the_holder_or_waits(tmp_path):
    ids, emb = pair()
    folder = tmp_path / "c"
    with cache_lock(folder):
        owner = json.loads((folder / ".lock").read_text())
        assert owner == {"pid": os.getpid(), "host": socket.gethostname()}
        holder = rf"pid {os.getpid()} on host {socket.gethostname()}"
        with pytest.raises(CacheError, match=rf"being written by another writer \({holder}"):
            write_cache(folder, ids, emb, fingerprint=FP)
        with pytest.raises(CacheError, match="being written"):
            write_cache(folder, ids, emb, fingerprint=FP, timeout=0.2)
    assert not (folder / ".lock").exists()
    assert not (folder / "meta.json").exists()  # the refused writers wrote nothing

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cache_lock(folder):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(30)
        threading.Timer(0.3, release.set).start()
        start = time.monotonic()
        cache = write_cache(folder, ids, emb, fingerprint=FP, timeout=30)
        assert time.monotonic() - start >= 0.25  # it waited for the holder
    finally:
        release.set()
        thread.join()
    assert np.array_equal(cache.lookup(ids).image, emb.image)


LOCK_AND_STALL = """
import sys, time
from pathlib import Path
from jestcore.adapters.cache import cache_lock
with cache_lock(sys.argv[1]):
    Path(sys.argv[2]).touch()
    time.sleep(600)
"""


def test_the_lock_of_a_killed_writer_is_taken_over(tmp_path):
    folder, marker = tmp_path / "c", tmp_path / "locked"
    proc = subprocess.Popen([sys.executable, "-c", LOCK_AND_STALL, str(folder), str(marker)])
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the holder never locked"
            time.sleep(0.05)
        with pytest.raises(CacheError, match=rf"pid {proc.pid} on host"):
            write_cache(folder, *pair(), fingerprint=FP)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert json.loads((folder / ".lock").read_text())["pid"] == proc.pid  # left behind
    cache = write_cache(folder, *pair(), fingerprint=FP)  # at once: no timeout needed
    assert len(cache) == 12 and not (folder / ".lock").exists()


# ----------------------------------------------------------------------------- metadata


@pytest.fixture
def finished(tmp_path):
    ids, emb = pair()
    folder = tmp_path / "c"
    write_cache(folder, ids, emb, fingerprint=FP)
    return folder, ids, emb


def test_every_single_bit_flip_of_meta_json_is_refused_or_harmless(finished):
    folder, ids, _ = finished
    meta_file = folder / "meta.json"
    original = meta_file.read_bytes()
    expected = ArrayCache(folder, fingerprint=FP).lookup(ids)
    refused = harmless = 0
    fd = os.open(meta_file, os.O_WRONLY)  # flip bytes in place: one open, not one per flip
    try:
        for i in range(len(original)):
            for bit in range(8):
                os.pwrite(fd, bytes([original[i] ^ (1 << bit)]), i)
                try:
                    got = ArrayCache(folder, fingerprint=FP, verify=False).lookup(ids)
                except CacheError as e:
                    assert "meta.json" in str(e), (i, bit, str(e))
                    refused += 1
                    continue
                finally:
                    os.pwrite(fd, original[i : i + 1], i)
                for a, b in zip(got, expected, strict=True):  # loads: the very same values
                    assert np.array_equal(np.asarray(a), np.asarray(b)), (i, bit)
                harmless += 1
    finally:
        os.close(fd)
    assert refused + harmless == 8 * len(original) and refused > 0.95 * 8 * len(original)
    assert meta_file.read_bytes() == original
    ArrayCache(folder, fingerprint=FP)


def test_tampered_metadata_is_refused_naming_the_field(finished):
    folder, ids, emb = finished
    text = (folder / "meta.json").read_text()
    meta = json.loads(text)
    assert '"bias": -10.0' in text
    for flipped in (" ", "\r"):  # one bit of "-" (0x2d): still JSON, with bias +10.0
        (folder / "meta.json").write_text(text.replace('"bias": -10.0', f'"bias": {flipped}10.0'))
        with pytest.raises(CacheError, match=r"meta\.json: field 'checksum' does not match"):
            ArrayCache(folder, fingerprint=FP)
    edits = {  # hand edits, with the checksum recomputed to match
        "scalars.scale": lambda m: m["scalars"].update(scale="10.0"),
        "scalars": lambda m: m["scalars"].pop("bias"),
        "files.image.file": lambda m: m["files"].update(
            image=m["files"]["text"], text=m["files"]["image"]
        ),
        "files.ids.sha256": lambda m: m["files"]["ids"].update(sha256="0" * 63),
        "dtype": lambda m: m.update(dtype="bfloat16"),
        "n": lambda m: m.update(n=True),
        "arrays": lambda m: m.update(arrays=["text", "image"]),
        "fingerprint": lambda m: m.update(fingerprint=7),
        "files": lambda m: m["files"].pop("text"),
        "version": lambda m: m.update(version=1),
        "model": lambda m: m.pop("model"),
        "extra": lambda m: m.update(extra=1),
    }
    for field, edit in edits.items():
        changed = json.loads(json.dumps(meta))
        edit(changed)
        write_meta(folder, changed)
        with pytest.raises(CacheError, match=rf"meta\.json: field '{field}'"):
            ArrayCache(folder, fingerprint=FP)
    (folder / "meta.json").write_text(json.dumps([meta]))
    with pytest.raises(CacheError, match=r"meta\.json must hold a JSON object"):
        ArrayCache(folder, fingerprint=FP)
    write_meta(folder, meta)  # the untouched values, rewritten: loads again
    assert np.array_equal(ArrayCache(folder, fingerprint=FP).lookup(ids).image, emb.image)


# ----------------------------------------------------------------------------- shards


def test_shard_folders_open_as_one_cache(tmp_path):
    ids, emb = pair(20)
    halves = [np.arange(0, 20, 2), np.arange(1, 20, 2)]
    for k, rows in enumerate(halves):
        write_cache(tmp_path / f"rank-{k}", ids[rows], jestcore.PairEmbeddings(
            emb.image[rows], emb.text[rows], emb.scale, emb.bias), fingerprint=FP)  # fmt: skip
    cache = ArrayCache([tmp_path / "rank-0", tmp_path / "rank-1"], fingerprint=FP)
    assert len(cache) == 20 and cache.is_pair
    order = np.random.default_rng(1).permutation(20)
    got = cache.lookup(ids[order])
    assert np.array_equal(got.image, emb.image[order]) and np.array_equal(got.text, emb.text[order])
    with pytest.raises(KeyError, match=r"1 of 2 ids are not in the cache \["):
        cache.lookup([int(ids[0]), -5])
    # shards must not overlap, and must share the fingerprint and the kind
    write_cache(tmp_path / "dup", ids[:2], jestcore.PairEmbeddings(
        emb.image[:2], emb.text[:2], emb.scale, emb.bias), fingerprint=FP)  # fmt: skip
    with pytest.raises(CacheError, match="ids repeat across the shards"):
        ArrayCache([tmp_path / "rank-0", tmp_path / "rank-1", tmp_path / "dup"], fingerprint=FP)
    write_cache(tmp_path / "other", [999], np.zeros(1, np.float32), fingerprint=FP)
    with pytest.raises(CacheError, match=r"disagree on (dtype|arrays)"):
        ArrayCache([tmp_path / "rank-0", tmp_path / "other"], fingerprint=FP)
    with pytest.raises(CacheError, match=r"meta\.json is missing"):
        ArrayCache([tmp_path / "rank-0", tmp_path / "rank-2"], fingerprint=FP)


def test_the_storage_imports_no_framework():
    code = (
        "import sys, jestcore.adapters.cache; "
        "print(sorted({'torch', 'jax'} & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_atomic_write_json_replaces_or_keeps_the_file(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"b": 1, "a": [1.5]})
    assert json.loads(path.read_text()) == {"a": [1.5], "b": 1}
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": [1.5], "b": 1}  # the previous content
    assert [f.name for f in tmp_path.iterdir()] == ["x.json"]  # no temporary left


def test_parts_left_after_a_commit_are_removed_by_the_next_writer_call(finished):
    folder, ids, emb = finished
    (folder / "parts").mkdir()
    atomic_write_json(folder / "parts" / "run.json", {"fingerprint": FP})  # killed after commit
    assert write_cache(folder, ids, emb, fingerprint=FP).fingerprint == FP
    assert not (folder / "parts").exists()
    (folder / "parts").mkdir()
    atomic_write_json(folder / "parts" / "run.json", {"fingerprint": FP})
    with cache_lock(folder):  # a writer at work: its parts are left alone
        write_cache(folder, ids, emb, fingerprint=FP)
    assert (folder / "parts" / "run.json").exists()
