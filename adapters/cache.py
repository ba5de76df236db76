"""Framework-neutral storage of per-example reference outputs, keyed by example id.

NumPy arrays and files only (no PyTorch, no JAX): the PyTorch adapter
(:class:`jestcore.adapters.torch.EmbeddingCache`,
:func:`~jestcore.adapters.torch.precompute_reference_embeddings`) and the JAX adapter
(:class:`jestcore.adapters.jax.EmbeddingCache`) are thin lookups over it.

Layout of a cache folder::

    meta.json       format, fingerprint, dtype, shapes, scale/bias, the name and sha256 of
                    every array file, and the sha256 of all of this (``checksum``)
    ids.npy         int64 example ids, sorted
    image.npy       (n, d) embeddings, rows in the order of ids.npy   (or values.npy for a
    text.npy        (n, d)                                             per-example array)
    parts/          while being written: one checksummed .npz per flushed part
    .lock           while being written: the writer's lock (its pid and host)

Safety:

* **One writer at a time.** A writer holds an exclusive ``fcntl.flock`` on ``.lock`` (with its
  pid and host recorded in the file) for the whole write; a second writer gets a
  :class:`CacheError` naming the holder, or waits up to ``timeout`` seconds for it. The
  operating system releases the lock of a killed writer, so a lock never outlives its owner.
* **Atomic files.** Every file is written to a temporary name, flushed to disk and renamed, and
  ``meta.json`` is the commit point: written last, so a folder without it is never mistaken for
  a finished cache. A cache being replaced stays complete and loadable until the new
  ``meta.json`` replaces it in one rename (the new arrays go to names it does not use). A writer
  killed at any point loses at most the part it was writing; a rerun resumes from the finished
  parts.
* **Verified parts.** Each part's record holds the sha256 of its file and of its ids; a part is
  checked when resumed and again, id by id, when the parts are merged.
* **Verified metadata.** ``meta.json`` is validated field by field and carries the sha256 of its
  canonical JSON form, so a flipped bit or a hand edit is refused with a :class:`CacheError`
  naming the file and the field. The array files are checked against their size, shape, dtype
  and sha256.
* **Nothing is pickled.** Arrays are ``.npy`` / ``.npz`` loaded with ``allow_pickle=False``;
  metadata is JSON.

Several finished caches (e.g. one shard folder per rank) open as one: pass a list of folders to
:class:`ArrayCache`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import numbers
import os
import re
import secrets
import shutil
import socket
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import jestcore

__all__ = [
    "ArrayCache",
    "CacheError",
    "atomic_write",
    "atomic_write_json",
    "cache_lock",
    "write_cache",
]

FORMAT = "jestcore-embedding-cache"
VERSION = 2
DTYPES = ("float16", "float32", "float64")
LOCK = ".lock"
_log = logging.getLogger(__name__)

Paths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


class CacheError(ValueError):
    """A cache that cannot be used: wrong fingerprint, missing or damaged files, or locked."""


# ----------------------------------------------------------------------------- atomic files


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None]) -> None:
    """Writes ``path`` atomically: ``write(file)`` to a temporary name, fsync, rename.

    The temporary file (``.NAME.tmp-PID``, in the same folder) is removed if ``write`` fails,
    so ``path`` is either its previous content or the complete new one, even after a crash.

    Args:
        path: The file to write.
        write: Writes the content to the binary file object it is given.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 1) -> None:
    """Writes ``data`` as UTF-8 JSON (sorted keys) with :func:`atomic_write`.

    Args:
        path: The file to write.
        data: JSON-serialisable data.
        indent: Indentation of the JSON text (``None``: one line).
    """
    text = json.dumps(data, indent=indent, sort_keys=True)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


_TMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: someone else's live process
        return True
    return True


def _remove_stray_temporaries(folder: Path) -> None:
    """Deletes the temporary files that writers killed mid-write left behind in ``folder``."""
    for f in folder.glob(".*.tmp-*"):
        m = _TMP.match(f.name)
        if m and f.is_file() and not _alive(int(m["pid"])):
            f.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheError(f"{what} {path} is missing") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CacheError(f"{what} {path} is not valid JSON (corrupted?): {e}") from None
    if not isinstance(data, dict):
        raise CacheError(f"{what} {path} must hold a JSON object")
    return data


# ----------------------------------------------------------------------------- the lock


def _holder(lock: Path) -> str:
    try:
        owner = json.loads(lock.read_text(encoding="utf-8"))
        return f"pid {int(owner['pid'])} on host {owner['host']!s}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not recorded itself yet"


def _check_timeout(timeout: Any) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
    seconds = float(timeout)
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"timeout must be a finite number of seconds >= 0, got {timeout}")
    return seconds


@contextlib.contextmanager
def cache_lock(path: str | os.PathLike[str], *, timeout: float = 0.0) -> Iterator[Path]:
    """Holds the exclusive writer's lock of a cache folder (created if needed).

    The lock is an ``fcntl.flock`` on ``path/.lock``, which records the holder's pid and host;
    the operating system releases it when the holder exits, even when it is killed, so a lock
    left by a dead writer is taken over at once. The file is removed on release.

    Args:
        path: The cache folder.
        timeout: Seconds to wait for another holder to release the lock; ``0`` (the default)
            fails at once.

    Yields:
        The folder, as a ``Path``.

    Raises:
        CacheError: If another process (or another open of the lock in this process) holds
            the lock after ``timeout`` seconds; the message names its pid and host.
    """
    wait = _check_timeout(timeout)
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path must be a folder, but {folder} is a file")
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise CacheError(
                    f"{folder} is being written by another writer ({_holder(lock)}; lock file "
                    f"{lock}): wait for it, pass timeout=SECONDS to wait, or give each rank "
                    "its own folder"
                ) from None
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            continue
        try:  # the holder may have removed the file we opened before we locked it: retry
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        yield folder
    finally:
        lock.unlink(missing_ok=True)  # while locked: nobody else holds this file
        os.close(fd)


# ----------------------------------------------------------------------------- metadata

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = {
    "format", "version", "fingerprint", "config", "model", "dtype", "arrays", "scalars", "n",
    "files", "checksum",
}  # fmt: skip
_ARRAY_NAMES = (["image", "text"], ["values"])


def _canonical_sha256(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
    ).hexdigest()


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _validate_meta(meta: dict[str, Any], where: Path) -> None:
    """Checks every field of a finished cache's metadata; raises naming the first bad one."""

    def bad(field: str, why: str) -> CacheError:
        return CacheError(f"{where}: field {field!r} {why} (corrupted or edited?)")

    if meta.get("format") != FORMAT:
        raise bad("format", f"must be {FORMAT!r}, got {meta.get('format')!r}")
    if meta.get("version") != VERSION or not _is_int(meta.get("version")):
        raise bad(
            "version",
            f"must be {VERSION}, got {meta.get('version')!r} (a cache of another version of "
            "jestcore: recompute it with overwrite=True)",
        )
    missing, unknown = sorted(_FIELDS - meta.keys()), sorted(meta.keys() - _FIELDS)
    if missing:
        raise bad(missing[0], "is missing")
    if unknown:
        raise bad(unknown[0], "is not a field of a cache's metadata")
    if not isinstance(meta["fingerprint"], str) or not meta["fingerprint"]:
        raise bad("fingerprint", "must be a non-empty string")
    if meta["model"] is not None and not isinstance(meta["model"], str):
        raise bad("model", "must be a string or null")
    if meta["dtype"] not in DTYPES:
        raise bad("dtype", f"must be one of {DTYPES}, got {meta['dtype']!r}")
    arrays = meta["arrays"]
    if arrays not in _ARRAY_NAMES:
        raise bad("arrays", f"must be {_ARRAY_NAMES[0]} or {_ARRAY_NAMES[1]}, got {arrays!r}")
    scalars = meta["scalars"]
    expected = ["bias", "scale"] if arrays == _ARRAY_NAMES[0] else []
    if not isinstance(scalars, dict) or sorted(scalars) != expected:
        raise bad("scalars", f"must be an object with the keys {expected}, got {scalars!r}")
    for k, v in scalars.items():
        if not _is_number(v):
            raise bad(f"scalars.{k}", f"must be a finite number, got {v!r}")
    n = meta["n"]
    if not _is_int(n) or n < 0:
        raise bad("n", f"must be an int >= 0, got {n!r}")
    files = meta["files"]
    if not isinstance(files, dict) or sorted(files) != sorted(["ids", *arrays]):
        raise bad("files", f"must be an object with the keys {sorted(['ids', *arrays])}")
    for name, entry in files.items():
        field = f"files.{name}"
        if not isinstance(entry, dict) or sorted(entry) != ["file", "sha256", "shape"]:
            raise bad(field, "must be an object with the keys file, sha256 and shape")
        m = _ARRAY_FILE.match(entry["file"]) if isinstance(entry["file"], str) else None
        if m is None or m[1] != name:
            raise bad(f"{field}.file", f"must be {name}.npy or {name}.TOKEN.npy, got "
                      f"{entry['file']!r}")  # fmt: skip
        shape = entry["shape"]
        ndim = {"ids": 1, "image": 2, "text": 2}.get(name)
        if (
            not isinstance(shape, list)
            or not all(_is_int(s) and s >= 0 for s in shape)
            or not shape
            or shape[0] != n
            or (ndim is not None and len(shape) != ndim)
        ):
            raise bad(f"{field}.shape", f"must be a list of sizes starting with n={n}, got "
                      f"{shape!r}")  # fmt: skip
        if not isinstance(entry["sha256"], str) or not _HEX64.match(entry["sha256"]):
            raise bad(f"{field}.sha256", "must be 64 lowercase hex digits")
    if arrays == _ARRAY_NAMES[0] and files["image"]["shape"] != files["text"]["shape"]:
        raise bad("files.text.shape", "must equal files.image.shape")
    if not isinstance(meta["checksum"], str) or meta["checksum"] != _canonical_sha256(meta):
        raise bad("checksum", "does not match the sha256 of the other fields")


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated metadata of the finished cache in folder ``path``.

    Raises:
        CacheError: If ``meta.json`` is missing, not JSON, or any field is malformed or does
            not match the checksum (the message names the file and the field).
    """
    where = Path(path) / "meta.json"
    meta = _read_json(where, "cache metadata")
    _validate_meta(meta, where)
    return meta


# ----------------------------------------------------------------------------- parts

_PART = re.compile(r"^part-(\d{6,})\.(npz|json)$")
_ARRAY_FILE = re.compile(r"^(ids|image|text|values)(?:\.[0-9a-f]+)?\.npy$")
_LOAD_ERRORS = (CacheError, OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def _ids_sha256(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes()).hexdigest()


class _Parts:
    """The finished parts of a cache being written, in ``folder/parts``."""

    def __init__(self, folder: Path, fingerprint: str):
        self.dir = folder / "parts"
        self.fingerprint = fingerprint
        self.next_index = 0

    def recorded_fingerprint(self) -> str | None:
        """The fingerprint of the partial cache in ``parts/``, if there is a readable one."""
        run = self.dir / "run.json"
        if not run.exists():
            return None
        try:
            return str(_read_json(run, "partial cache record").get("fingerprint"))
        except CacheError:
            return None

    def start(self, meta: dict[str, Any], *, overwrite: bool) -> None:
        """Resumes a partial cache of this fingerprint; refuses (or discards) another one."""
        if self.dir.exists() and self.recorded_fingerprint() != self.fingerprint:
            previous = self.recorded_fingerprint()
            if previous is not None and not overwrite:
                raise CacheError(
                    f"{self.dir.parent} holds a partial cache made with fingerprint "
                    f"{previous[:12]}..., not {self.fingerprint[:12]}...: "
                    "pass overwrite=True to discard it"
                )
            shutil.rmtree(self.dir)  # another model's parts, or no readable record: unusable
        self.dir.mkdir(parents=True, exist_ok=True)
        _remove_stray_temporaries(self.dir)
        if not (self.dir / "run.json").exists():
            atomic_write_json(self.dir / "run.json", meta)

    def load(self) -> list[tuple[Path, np.ndarray]]:
        """The (file, ids) of every part whose record, checksums and contents are intact."""
        found = []
        seen: set[int] = set()
        for f in self.dir.iterdir():  # never reuse a name, even a damaged part's
            m = _PART.match(f.name)
            if m:
                self.next_index = max(self.next_index, int(m[1]) + 1)
        for record in sorted(self.dir.glob("part-*.json")):
            if not _PART.match(record.name):
                continue
            data_file = record.with_suffix(".npz")
            try:
                meta = _read_json(record, "part record")
                if meta.get("sha256") != _sha256(data_file):
                    raise CacheError(f"{data_file} does not match its sha256")
                # allow_pickle=False: an object array is refused here, never unpickled
                with np.load(data_file, allow_pickle=False) as z:
                    ids = z["ids"]
                    shapes_ok = ids.ndim == 1 and all(z[k].shape[:1] == ids.shape for k in z.files)
                if (
                    not shapes_ok
                    or ids.dtype != np.int64
                    or meta.get("n") != ids.size
                    or meta.get("ids_sha256") != _ids_sha256(ids)
                ):
                    raise CacheError(f"{data_file} does not hold what its record describes")
                if not seen.isdisjoint(ids.tolist()):
                    raise CacheError(f"{data_file} repeats ids of an earlier part")
            except _LOAD_ERRORS as e:
                _log.warning(
                    "discarding damaged cache part %s (%s); it will be recomputed", data_file, e
                )
                record.unlink()
                data_file.unlink(missing_ok=True)
                continue
            found.append((data_file, ids))
            seen.update(ids.tolist())
        return found

    def write(self, ids: np.ndarray, arrays: dict[str, np.ndarray]) -> Path:
        data_file = self.dir / f"part-{self.next_index:06d}.npz"
        self.next_index += 1
        payload: dict[str, Any] = {"ids": ids, **arrays}
        atomic_write(data_file, lambda f: np.savez(f, **payload))
        record = {"sha256": _sha256(data_file), "n": len(ids), "ids_sha256": _ids_sha256(ids)}
        atomic_write_json(data_file.with_suffix(".json"), record)
        return data_file


def _files_in_use(folder: Path) -> set[str]:
    """The array files that the folder's current ``meta.json`` names (read leniently)."""
    try:
        meta = _read_json(folder / "meta.json", "cache metadata")
        return {str(e["file"]) for e in meta.get("files", {}).values()}
    except (CacheError, KeyError, TypeError, AttributeError):
        return set()


def _free_name(folder: Path, name: str, in_use: set[str], token: str) -> Path:
    """``name.npy``, or ``name.<token>.npy`` if the current cache uses ``name.npy``."""
    plain = f"{name}.npy"
    return folder / (plain if plain not in in_use else f"{name}.{token}.npy")


def _remove_unused_arrays(folder: Path, keep: set[str]) -> None:
    """Deletes array files of replaced caches (names this module writes, not in ``keep``)."""
    for f in folder.iterdir():
        if _ARRAY_FILE.match(f.name) and f.name not in keep and f.is_file():
            f.unlink()


def _checked_part(data_file: Path, ids: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """A part's arrays, after checking that it still holds exactly the ids recorded for it."""
    with np.load(data_file, allow_pickle=False) as z:
        stored = z["ids"]
        if stored.shape != ids.shape or not np.array_equal(stored, ids):
            raise CacheError(
                f"{data_file} no longer holds the ids recorded for it (was it written by "
                "another process?); nothing was committed: run the writer again"
            )
        return {k: z[k] for k in names}


def _consolidate(folder: Path, parts: list[tuple[Path, np.ndarray]], meta: dict[str, Any]) -> None:
    """Merges the parts into sorted memory-mappable ``.npy`` files, then commits ``meta.json``.

    The arrays go to names that the folder's current cache (if any) does not use, so it stays
    intact until the new ``meta.json`` replaces the old one; its files are deleted after.
    """
    all_ids = np.concatenate([ids for _, ids in parts]) if parts else np.empty(0, np.int64)
    order = np.argsort(all_ids, kind="stable")
    sorted_ids = all_ids[order]
    dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
    if dup.size:
        raise CacheError(f"example ids must be unique; repeated: {np.unique(dup)[:10].tolist()}")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    names = meta["arrays"]
    in_use = _files_in_use(folder)
    token = secrets.token_hex(6)
    files: dict[str, Any] = {}
    with np.load(parts[0][0], allow_pickle=False) as z:
        shapes = {k: (all_ids.size, *z[k].shape[1:]) for k in names}
    _remove_stray_temporaries(folder)
    outputs = {}
    for name in names:
        target = _free_name(folder, name, in_use, token)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        outputs[name] = (
            target,
            tmp,
            np.lib.format.open_memmap(tmp, mode="w+", dtype=meta["dtype"], shape=shapes[name]),
        )
    start = 0
    for data_file, ids in parts:
        for name, a in _checked_part(data_file, ids, names).items():
            outputs[name][2][rank[start : start + ids.size]] = a
        start += ids.size
    for name, (target, tmp, out) in outputs.items():
        out.flush()
        del out
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        files[name] = {"file": target.name, "shape": list(shapes[name])}
    outputs.clear()
    ids_file = _free_name(folder, "ids", in_use, token)
    atomic_write(ids_file, lambda f: np.save(f, sorted_ids, allow_pickle=False))
    files["ids"] = {"file": ids_file.name, "shape": [int(sorted_ids.size)]}
    for entry in files.values():
        entry["sha256"] = _sha256(folder / entry["file"])
    _fsync_dir(folder)
    final = {**meta, "n": int(sorted_ids.size), "files": files}
    atomic_write_json(folder / "meta.json", {**final, "checksum": _canonical_sha256(final)})
    _remove_unused_arrays(folder, {e["file"] for e in files.values()})


class _Writer:
    """A cache being written in ``folder`` (the caller holds :func:`cache_lock`)."""

    def __init__(self, folder: Path, meta: dict[str, Any], *, overwrite: bool):
        self.folder = folder
        self.meta = meta
        self.parts = _Parts(folder, meta["fingerprint"])
        self.parts.start(meta, overwrite=overwrite)
        self.done = self.parts.load()
        self.resumed: set[int] = set()  # ids cached before an interruption
        for _, part_ids in self.done:
            self.resumed.update(part_ids.tolist())
        self._scalars_file = self.parts.dir / "scalars.json"
        self.scalars: dict[str, float] | None = (
            _read_json(self._scalars_file, "cached scale/bias")
            if self._scalars_file.exists()
            else None
        )

    def check_scalars(self, scalars: dict[str, float]) -> None:
        """Records the per-model scalars once; refuses different ones later."""
        if self.scalars is None:
            self.scalars = scalars
            atomic_write_json(self._scalars_file, scalars)
        elif scalars != self.scalars:
            raise CacheError(
                f"the model's scale/bias changed between batches ({self.scalars} then "
                f"{scalars}): the reference must be frozen"
            )

    def write(self, ids: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        """Writes one finished part."""
        self.done.append((self.parts.write(ids, arrays), ids))

    def commit(self) -> None:
        """Merges the parts, commits ``meta.json`` and removes the parts."""
        if not self.done:
            raise ValueError("loader yielded no examples: nothing to cache")
        with np.load(self.done[0][0], allow_pickle=False) as z:
            names = sorted(k for k in z.files if k != "ids")
        meta = {**self.meta, "arrays": names, "scalars": self.scalars or {}}
        _consolidate(self.folder, self.done, meta)
        shutil.rmtree(self.parts.dir)


def _open_or_write(
    folder: Path,
    fingerprint: str,
    *,
    overwrite: bool,
    timeout: float,
    open_cache: Callable[[], Any],
    write: Callable[[], None],
) -> Any:
    """The finished cache in ``folder`` if it is to be kept, else ``write()`` under the lock.

    Opening a finished cache needs no lock (a replacement keeps it intact until its commit),
    so callers that find one, e.g. every rank at every start, never wait for each other.
    """
    if not overwrite and (folder / "meta.json").exists():
        cache = open_cache()  # refuses another fingerprint and a damaged cache
        if (folder / "parts").exists():  # tidy up, if no writer is at work
            with contextlib.suppress(CacheError), cache_lock(folder):
                _drop_committed_parts(folder, fingerprint)
        return cache
    with cache_lock(folder, timeout=timeout):
        if not overwrite and (folder / "meta.json").exists():  # committed while we waited
            _drop_committed_parts(folder, fingerprint)
            return open_cache()
        write()
        return open_cache()


def _drop_committed_parts(folder: Path, fingerprint: str) -> None:
    """Removes the parts of this fingerprint that a writer killed after its commit left."""
    parts = _Parts(folder, fingerprint)
    if parts.dir.exists() and parts.recorded_fingerprint() == fingerprint:
        shutil.rmtree(parts.dir)


def run_meta(fingerprint: str, *, config: Any, dtype: str, model: str | None) -> dict[str, Any]:
    """The fields of a cache's metadata that its writer knows before the first part."""
    if not isinstance(fingerprint, str) or not fingerprint:
        raise TypeError(f"fingerprint must be a non-empty str, got {fingerprint!r}")
    if model is not None and not isinstance(model, str):
        raise TypeError(f"model must be a str (the model's name) or None, got {model!r}")
    try:
        json.dumps(config)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"config must be JSON-serialisable (dicts, lists, str, numbers): {e}"
        ) from None
    return {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": fingerprint,
        "config": config,
        "dtype": dtype,
        "model": model,
    }


# ----------------------------------------------------------------------------- ids and arrays


def ids_array(ids: Any, n: int | None, what: str) -> np.ndarray:
    """``ids`` as 1-D int64 NumPy ids (any array with ``__array__``, or a list)."""
    a = np.asarray(ids)
    if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise TypeError(
            f"{what} must be a 1-D sequence of integer example ids, got {a.dtype} {a.shape}"
        )
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{what} has {a.shape[0]} ids for a batch of {n} examples")
    return a.astype(np.int64)


def _dtype_name(dtype: Any, what: str) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise TypeError(
            f"{what} must be float16, float32 or float64 (stored as NumPy .npy, which has no "
            f"bfloat16), got {dtype!r}"
        )
    return name


def write_cache(
    path: str | os.PathLike[str],
    ids: Any,
    outputs: Any,
    /,
    *,
    fingerprint: str,
    config: Any = None,
    model: str | None = None,
    dtype: Any = None,
    overwrite: bool = False,
    timeout: float = 0.0,
) -> ArrayCache:
    """Writes a cache from per-example arrays you computed (NumPy, JAX or any array).

    The same folder layout, lock, atomic commit and checks as
    :func:`jestcore.adapters.torch.precompute_reference_embeddings`; the arrays are written as
    one part. A finished cache with this fingerprint is returned as is (unless ``overwrite``).

    Args:
        path: The cache folder (created).
        ids: 1-D integer example ids, unique.
        outputs: :class:`jestcore.PairEmbeddings` ``(image, text, scale, bias)`` with ``(n, d)``
            embeddings and scalar ``scale``, ``bias``; or an ``(n, ...)`` array of per-example
            values.
        fingerprint: A string naming what produced the outputs (e.g. a hash of the weights
            and the preprocessing); readers must present the same one.
        config: JSON-serialisable description, stored in the metadata.
        model: The model's name, stored in the metadata.
        dtype: Storage dtype: ``"float16"``, ``"float32"`` or ``"float64"`` (default: the
            arrays' own, which must be one of those).
        overwrite: Replace a finished cache at ``path``.
        timeout: Seconds to wait for another writer of ``path`` (see :func:`cache_lock`).

    Returns:
        The finished :class:`ArrayCache`, verified.

    Raises:
        CacheError: If ``path`` holds a cache with another fingerprint (without ``overwrite``),
            is locked by another writer, or ids repeat.
        TypeError: If an argument has the wrong type.
        ValueError: If the arrays' lengths differ from the number of ids.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike folder, got {type(path).__name__}")
    if isinstance(outputs, jestcore.PairEmbeddings):
        raw = {"image": np.asarray(outputs.image), "text": np.asarray(outputs.text)}
        scalars = {k: _scalar(getattr(outputs, k), k) for k in ("bias", "scale")}
        if raw["image"].ndim != 2 or raw["image"].shape != raw["text"].shape:
            raise ValueError(
                "outputs.image and outputs.text must be (n, d) arrays of one shape, got "
                f"{raw['image'].shape} and {raw['text'].shape}"
            )
    else:
        raw, scalars = {"values": np.asarray(outputs)}, {}
        if raw["values"].ndim < 1:
            raise ValueError("outputs must be an (n, ...) array of per-example values")
    name = _dtype_name(dtype if dtype is not None else raw[next(iter(raw))].dtype, "dtype")
    meta = run_meta(fingerprint, config=config, dtype=name, model=model)
    arrays = {k: a.astype(name) for k, a in raw.items()}
    ids = ids_array(ids, next(iter(arrays.values())).shape[0], "ids")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {overwrite!r}")
    folder = Path(path)

    def write() -> None:
        writer = _Writer(folder, meta, overwrite=overwrite)
        if writer.done or writer.scalars is not None:  # left by a killed write: start afresh
            shutil.rmtree(writer.parts.dir)
            writer = _Writer(folder, meta, overwrite=overwrite)
        writer.check_scalars(scalars)
        writer.write(ids, arrays)
        writer.commit()

    return _open_or_write(
        folder,
        fingerprint,
        overwrite=overwrite,
        timeout=_check_timeout(timeout),
        open_cache=lambda: ArrayCache(folder, fingerprint=fingerprint),
        write=write,
    )


def _scalar(x: Any, name: str) -> float:
    a = np.asarray(x)
    if a.ndim != 0 or not np.issubdtype(a.dtype, np.number) or not np.isfinite(a):
        raise ValueError(f"outputs.{name} must be a finite real scalar, got {x!r}")
    return float(a)


# ----------------------------------------------------------------------------- reading


def _as_paths(path: Paths) -> list[Path]:
    if isinstance(path, str | os.PathLike):
        return [Path(path)]
    if isinstance(path, Sequence) and path and all(isinstance(p, str | os.PathLike) for p in path):
        return [Path(p) for p in path]
    raise TypeError(
        "path must be a cache folder (str or os.PathLike) or a non-empty list of them, got "
        f"{path!r}"
    )


class ArrayCache:
    """Verified, memory-mapped finished caches (one folder or several shards), as NumPy.

    Args:
        path: A cache folder, or a list of them (e.g. one per rank) opened as one: they must
            share the fingerprint, dtype and kind (pair or values), and no id may repeat.
        fingerprint: The fingerprint the cache must have been written with.
        verify: Check the sha256 of every file (reads them once); the metadata, sizes, shapes
            and dtypes are always checked.

    Raises:
        CacheError: If a folder is not a finished cache, the fingerprint differs, the metadata
            or a file is missing, malformed, truncated or corrupted, or shards disagree.
    """

    def __init__(self, path: Paths, /, *, fingerprint: str, verify: bool = True) -> None:
        paths = _as_paths(path)
        if not isinstance(fingerprint, str):
            raise TypeError(f"fingerprint must be a str, got {type(fingerprint).__name__}")
        metas = [read_meta(p) for p in paths]
        for p, meta in zip(paths, metas, strict=True):
            if meta["fingerprint"] != fingerprint:
                raise CacheError(
                    f"{p} was made by a different model, config or dtype: its fingerprint is "
                    f"{meta['fingerprint'][:12]}... (model {meta['model']}, config "
                    f"{meta['config']!r}, dtype {meta['dtype']}), expected "
                    f"{fingerprint[:12]}...; recompute it with overwrite=True"
                )
            for key in ("dtype", "arrays", "scalars"):
                if meta[key] != metas[0][key]:
                    raise CacheError(
                        f"the shards {paths[0]} and {p} disagree on {key}: {metas[0][key]!r} "
                        f"and {meta[key]!r}"
                    )
        self.paths: list[Path] = paths
        self.path: Path = paths[0]
        self.meta: dict[str, Any] = metas[0]
        self.fingerprint: str = fingerprint
        self.scalars: dict[str, float] = dict(self.meta["scalars"])
        self._shards = [
            {name: self._open(p, m, name, verify) for name in ["ids", *m["arrays"]]}
            for p, m in zip(paths, metas, strict=True)
        ]
        for p, m, arrays in zip(paths, metas, self._shards, strict=True):
            ids = arrays["ids"]
            if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
                raise CacheError(f"{p / m['files']['ids']['file']} must hold sorted unique ids")
        if len(paths) == 1:
            self.ids: np.ndarray = np.asarray(self._shards[0]["ids"])
            self._shard = self._row = None
        else:
            all_ids = np.concatenate([np.asarray(s["ids"]) for s in self._shards])
            order = np.argsort(all_ids, kind="stable")
            self.ids = all_ids[order]
            dup = self.ids[1:][self.ids[1:] == self.ids[:-1]]
            if dup.size:
                raise CacheError(f"ids repeat across the shards {paths}: {dup[:10].tolist()}")
            shard = np.concatenate([np.full(s["ids"].size, k) for k, s in enumerate(self._shards)])
            row = np.concatenate([np.arange(s["ids"].size) for s in self._shards])
            self._shard, self._row = shard[order], row[order]

    @staticmethod
    def _open(folder: Path, meta: dict[str, Any], name: str, verify: bool) -> np.ndarray:
        entry = meta["files"][name]
        file = folder / entry["file"]
        if not file.is_file():
            raise CacheError(f"{file} is missing")
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise CacheError(f"{file} is truncated or corrupted: {e}") from None
        if list(array.shape) != entry["shape"]:
            raise CacheError(f"{file} has shape {list(array.shape)}, expected {entry['shape']}")
        expected_dtype = "int64" if name == "ids" else meta["dtype"]
        if array.dtype != np.dtype(expected_dtype):
            raise CacheError(f"{file} has dtype {array.dtype}, expected {expected_dtype}")
        if verify and _sha256(file) != entry["sha256"]:
            raise CacheError(f"{file} is corrupted: its sha256 does not match meta.json")
        return array

    @property
    def dtype(self) -> Any:
        """The storage dtype (a NumPy dtype here; the framework's dtype in the adapters)."""
        return np.dtype(self.meta["dtype"])

    def __len__(self) -> int:
        return int(self.ids.size)

    def __contains__(self, example_id: Any) -> bool:
        i = np.searchsorted(self.ids, example_id)
        return bool(i < self.ids.size and self.ids[i] == example_id)

    @property
    def is_pair(self) -> bool:
        """Whether the cache holds image/text embeddings (else per-example ``values``)."""
        return "image" in self.meta["arrays"]

    def positions(self, ids: Any) -> np.ndarray:
        """The positions of ``ids`` in the cache's sorted ids (:attr:`ids`).

        Raises:
            KeyError: Naming the ids that are not in the cache.
        """
        q = ids_array(ids, None, "ids")
        pos = np.searchsorted(self.ids, q)
        found = pos < self.ids.size
        found[found] = self.ids[pos[found]] == q[found]
        if not found.all():
            missing = q[~found]
            where = self.path if len(self.paths) == 1 else self.paths
            raise KeyError(
                f"{missing.size} of {q.size} ids are not in the cache {where}: "
                f"{missing[:10].tolist()}{' ...' if missing.size > 10 else ''}"
            )
        return pos

    def rows(self, name: str, pos: np.ndarray) -> np.ndarray:
        """The rows at positions ``pos`` (from :meth:`positions`) of the array ``name``."""
        shards = [s[name] for s in self._shards]
        out = np.empty((pos.size, *shards[0].shape[1:]), dtype=shards[0].dtype)
        if self._shard is None:
            order = np.argsort(pos, kind="stable")  # read the memory map in file order
            out[order] = shards[0][pos[order]]
            return out
        assert self._row is not None
        shard, row = self._shard[pos], self._row[pos]
        for k, array in enumerate(shards):
            mine = np.flatnonzero(shard == k)
            mine = mine[np.argsort(row[mine], kind="stable")]
            out[mine] = array[row[mine]]
        return out

    def lookup(self, ids: Any, /) -> Any:
        """The cached outputs of examples ``ids`` as NumPy arrays, in the order of ``ids``.

        Returns:
            :class:`~jestcore.PairEmbeddings` ``(image, text, scale, bias)`` for a pair cache,
            else the ``(len(ids), ...)`` array of values.

        Raises:
            KeyError: If an id is not in the cache.
        """
        return self._lookup(ids, lambda a: a)

    def _lookup(self, ids: Any, convert: Callable[[np.ndarray], Any]) -> Any:
        pos = self.positions(ids)
        if self.is_pair:
            return jestcore.PairEmbeddings(
                convert(self.rows("image", pos)),
                convert(self.rows("text", pos)),
                self.scalars["scale"],
                self.scalars["bias"],
            )
        return convert(self.rows("values", pos))

    def __repr__(self) -> str:
        shapes = {k: [len(self), *a.shape[1:]] for k, a in self._shards[0].items() if k != "ids"}
        where = str(self.path) if len(self.paths) == 1 else [str(p) for p in self.paths]
        return (
            f"{type(self).__name__}({where!r}, n={len(self)}, {shapes}, dtype={self.meta['dtype']})"
        )
