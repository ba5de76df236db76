"""A disk cache of the frozen reference model's per-example embeddings, keyed by example id.

For the pairwise sigmoid loss, a reference *loss* depends on which examples share the
super-batch, but the reference's *embeddings* of an example do not, so they are what is cached
(for per-example losses, cache the losses themselves: any per-example tensor works).

Layout of a cache folder::

    meta.json       format, fingerprint, dtype, shapes, scale/bias, the name and sha256 of
                    every array file
    ids.npy         int64 example ids, sorted
    image.npy       (n, d) embeddings, rows in the order of ids.npy   (or values.npy for a
    text.npy        (n, d)                                             per-example tensor)
    parts/          while being written: one checksummed .npz per flushed part

Safety: every file is written to a temporary name, flushed to disk and renamed (atomic), and
``meta.json`` is the commit point: it is written last, so a folder without it is never
mistaken for a finished cache, and a cache being replaced (``overwrite=True``) writes its
arrays under names the current ``meta.json`` does not use (``image.<token>.npy``), so the
previous cache stays complete and loadable until the new ``meta.json`` replaces it in one
rename; the previous files are deleted only then. A writer killed at any point (even
``SIGKILL`` in the middle of a file) therefore loses at most the part it was writing: a rerun
resumes from the finished parts, which are checksummed. :class:`EmbeddingCache` checks the
fingerprint (model weights, config, dtype), the files' sizes and their sha256 checksums before
use. Nothing is pickled: arrays are ``.npy`` / ``.npz`` loaded with ``allow_pickle=False``
(a planted object array is refused, never unpickled), metadata is JSON.

One writer per folder at a time: two processes writing the same cache concurrently is not
supported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jestcore.adapters.torch.scoring import default_forward, score_forward
from jestcore.adapters.torch.trees import map_batch

import jestcore

__all__ = [
    "CacheError",
    "EmbeddingCache",
    "model_fingerprint",
    "precompute_reference_embeddings",
]

FORMAT = "jestcore-embedding-cache"
VERSION = 1
_DTYPES = {torch.float16: "float16", torch.float32: "float32", torch.float64: "float64"}
_log = logging.getLogger(__name__)


class CacheError(ValueError):
    """A cache that cannot be used: wrong fingerprint, missing or damaged files."""


# ----------------------------------------------------------------------------- fingerprints


def _dtype_name(dtype: Any) -> str:
    if dtype not in _DTYPES:
        raise TypeError(
            f"dtype must be torch.float16, torch.float32 or torch.float64 (stored as NumPy "
            f".npy, which has no bfloat16), got {dtype!r}"
        )
    return _DTYPES[dtype]


def _config_json(config: Any) -> str:
    try:
        return json.dumps(config, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"config must be JSON-serialisable (dicts, lists, str, numbers): {e}"
        ) from None


def model_fingerprint(model: Any, *, config: Any = None, dtype: Any = torch.float32) -> str:
    """A sha256 over a model's weights and buffers, a JSON config and the cache dtype.

    Args:
        model: An ``nn.Module`` (its ``state_dict``: names, dtypes, shapes and bytes are hashed).
        config: Anything else that changes the embeddings (preprocessing, resolution, model
            name), as JSON-serialisable data.
        dtype: The dtype the embeddings are stored in.

    Returns:
        A 64-character hex digest.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    h = hashlib.sha256()
    header = {"config": config, "dtype": _dtype_name(dtype), "class": type(model).__qualname__}
    h.update(_config_json(header).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().reshape(-1).contiguous().cpu()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(tensor.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Writes ``path`` through ``write(file)`` to a temporary name, fsyncs, renames."""
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


def _write_json(path: Path, data: dict[str, Any]) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(data, indent=1, sort_keys=True).encode()))


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


# ----------------------------------------------------------------------------- outputs


def _as_arrays(out: Any, dtype: torch.dtype) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """A forward's outputs as per-example NumPy arrays and per-model scalars."""
    np_dtype = _dtype_name(dtype)

    def host(t: Any, name: str) -> np.ndarray:
        if not isinstance(t, torch.Tensor) or t.ndim < 1:
            raise TypeError(
                f"forward must return per-example tensors; {name} is {type(t).__name__}"
            )
        return t.detach().to("cpu", torch.float64).numpy().astype(np_dtype)

    if isinstance(out, tuple) and len(out) == 4:
        p = jestcore.PairEmbeddings(*out)
        scalars = {k: float(_scalar(getattr(p, k))) for k in ("scale", "bias")}
        return {"image": host(p.image, "image"), "text": host(p.text, "text")}, scalars
    if isinstance(out, torch.Tensor):
        return {"values": host(out, "the output")}, {}
    raise TypeError(
        "forward must return jestcore.PairEmbeddings(image, text, scale, bias) or a tensor of "
        f"per-example values, got {type(out).__name__}"
    )


def _scalar(x: Any) -> Any:
    return x.detach() if isinstance(x, torch.Tensor) else x


def _ids_array(ids: Any, n: int | None, what: str) -> np.ndarray:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    a = np.asarray(ids)
    if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise TypeError(
            f"{what} must be a 1-D sequence of integer example ids, got {a.dtype} {a.shape}"
        )
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{what} has {a.shape[0]} ids for a batch of {n} examples")
    return a.astype(np.int64)


# ----------------------------------------------------------------------------- writing


def _default_ids(batch: Any) -> Any:
    if not (isinstance(batch, tuple | list) and len(batch) == 2):
        raise TypeError(
            "by default each batch must be (ids, inputs); pass ids=lambda batch: ... and "
            "forward=lambda model, batch: ... for other batch layouts"
        )
    return batch[0]


def _default_cache_forward(model: Any, batch: Any) -> Any:
    return default_forward(model, batch[1])


_PART = re.compile(r"^part-(\d{6,})\.(npz|json)$")


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
            _write_json(self.dir / "run.json", meta)

    def load(self) -> list[tuple[Path, np.ndarray]]:
        """The (file, ids) of every part whose record, checksum and contents are intact."""
        found = []
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
                if not shapes_ok or ids.dtype != np.int64 or meta.get("n") != ids.size:
                    raise CacheError(f"{data_file} does not hold what its record describes")
            except (CacheError, OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                _log.warning(
                    "discarding damaged cache part %s (%s); it will be recomputed", data_file, e
                )
                record.unlink()
                data_file.unlink(missing_ok=True)
                continue
            found.append((data_file, ids))
        return found

    def write(self, ids: np.ndarray, arrays: dict[str, np.ndarray]) -> Path:
        data_file = self.dir / f"part-{self.next_index:06d}.npz"
        self.next_index += 1
        _atomic_write(data_file, lambda f: np.savez(f, ids=ids, **arrays))
        _write_json(data_file.with_suffix(".json"), {"sha256": _sha256(data_file), "n": len(ids)})
        return data_file


def _files_in_use(folder: Path) -> set[str]:
    """The array files that the folder's current ``meta.json`` refers to (if it is readable)."""
    try:
        meta = _read_json(folder / "meta.json", "cache metadata")
        return {str(e["file"]) for e in meta.get("files", {}).values()}
    except (CacheError, KeyError, TypeError, AttributeError):
        return set()


def _free_name(folder: Path, name: str, in_use: set[str], token: str) -> Path:
    """``name.npy``, or ``name.<token>.npy`` if the current cache uses ``name.npy``."""
    plain = f"{name}.npy"
    return folder / (plain if plain not in in_use else f"{name}.{token}.npy")


_ARRAY_FILE = re.compile(r"^(ids|image|text|values)(\.[0-9a-f]+)?\.npy$")


def _remove_unused_arrays(folder: Path, keep: set[str]) -> None:
    """Deletes array files of replaced caches (names this module writes, not in ``keep``)."""
    for f in folder.iterdir():
        if _ARRAY_FILE.match(f.name) and f.name not in keep and f.is_file():
            f.unlink()


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
    for name in names:
        target = _free_name(folder, name, in_use, token)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=meta["dtype"], shape=shapes[name])
        start = 0
        for data_file, ids in parts:
            with np.load(data_file, allow_pickle=False) as z:
                out[rank[start : start + ids.size]] = z[name]
            start += ids.size
        out.flush()
        del out
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        files[name] = {"file": target.name, "shape": list(shapes[name])}
    ids_file = _free_name(folder, "ids", in_use, token)
    _atomic_write(ids_file, lambda f: np.save(f, sorted_ids, allow_pickle=False))
    files["ids"] = {"file": ids_file.name, "shape": [int(sorted_ids.size)]}
    for entry in files.values():
        entry["sha256"] = _sha256(folder / entry["file"])
    _fsync_dir(folder)
    _write_json(folder / "meta.json", {**meta, "n": int(sorted_ids.size), "files": files})
    _remove_unused_arrays(folder, {e["file"] for e in files.values()})


def precompute_reference_embeddings(
    model: Any,
    loader: Iterable[Any],
    path: str | os.PathLike[str],
    /,
    *,
    ids: Callable[[Any], Any] | None = None,
    forward: Callable[[Any, Any], Any] | None = None,
    config: Any = None,
    dtype: torch.dtype = torch.float32,
    device: Any = None,
    score_batch_size: int | None = None,
    part_size: int = 16384,
    overwrite: bool = False,
    progress: bool = True,
) -> EmbeddingCache:
    """Runs the frozen reference over a dataset once and caches its per-example outputs.

    Resumable and crash-safe: parts are flushed every ``part_size`` examples, and a rerun after
    an interruption (an exception, or the process killed at any point) skips the batches whose
    ids are already in intact parts. A finished cache with the same fingerprint is returned as
    is. A finished cache being replaced (``overwrite=True``) stays complete and loadable until
    the new one is committed, so a killed writer never leaves the folder without a usable
    cache.

    Args:
        model: The reference ``nn.Module`` (fingerprinted by its weights).
        loader: Iterable of batches, e.g. a ``DataLoader``; by default each batch is
            ``(ids, inputs)`` and the model is called as ``model(*inputs)`` (tuple),
            ``model(**inputs)`` (dict) or ``model(inputs)``.
        path: The cache folder (created).
        ids: ``batch -> 1-D integer ids`` (stable example ids, unique over the dataset).
        forward: ``(model, batch) -> PairEmbeddings(image, text, scale, bias)`` or a tensor
            of per-example values (e.g. reference losses of a per-example loss).
        config: JSON-serialisable description of anything else that shapes the outputs
            (preprocessing, resolution...): part of the fingerprint.
        dtype: Storage dtype: ``torch.float16``, ``float32`` or ``float64``.
        device: Where to run the model (the batch's tensors are moved there).
        score_batch_size: Micro-batch size of the forward pass (see
            :func:`~jestcore.adapters.torch.score_forward`).
        part_size: Examples per flushed part: the most work an interruption can lose.
        overwrite: Replace a finished cache at ``path`` (even one with this fingerprint) and
            discard a partial cache made with another fingerprint (without it, both are
            refused). A partial cache of this fingerprint is always resumed: its parts are
            this model's outputs, checked by their sha256.
        progress: Show a progress bar (tqdm, when installed).

    Returns:
        The finished :class:`EmbeddingCache`, already verified.

    Raises:
        CacheError: If ``path`` holds a cache (or a partial one) with a different fingerprint
            and ``overwrite`` is false, or a damaged finished cache, or ids repeat.
        TypeError: If an argument has the wrong type (e.g. ``model`` not an ``nn.Module``,
            ``dtype`` not float16/32/64).
        ValueError: If ``part_size`` or ``score_batch_size`` is not a positive int, ``path``
            is a file, or the loader yields no examples.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike folder, got {type(path).__name__}")
    if isinstance(loader, str | bytes) or not hasattr(loader, "__iter__"):
        raise TypeError(f"loader must be an iterable of batches, got {type(loader).__name__}")
    for name, fn in (("ids", ids), ("forward", forward)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be a callable or None, got {type(fn).__name__}")
    if isinstance(part_size, bool) or not isinstance(part_size, int) or part_size < 1:
        raise ValueError(f"part_size must be a positive int, got {part_size!r}")
    if score_batch_size is not None and (
        isinstance(score_batch_size, bool)
        or not isinstance(score_batch_size, int)
        or score_batch_size < 1
    ):
        raise ValueError(
            f"score_batch_size must be a positive int or None, got {score_batch_size!r}"
        )
    for name, flag in (("overwrite", overwrite), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path must be a folder, but {folder} is a file")
    fingerprint = model_fingerprint(model, config=config, dtype=dtype)  # checks model, dtype
    get_ids = ids or _default_ids
    fwd = forward or _default_cache_forward
    parts = _Parts(folder, fingerprint)
    if (folder / "meta.json").exists() and not overwrite:
        cache = EmbeddingCache(folder, fingerprint=fingerprint)  # refuses another fingerprint
        if parts.dir.exists() and parts.recorded_fingerprint() == fingerprint:
            shutil.rmtree(parts.dir)  # left by a writer killed after its commit
        return cache
    folder.mkdir(parents=True, exist_ok=True)
    run_meta = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": fingerprint,
        "config": config,
        "dtype": _dtype_name(dtype),
        "model": type(model).__qualname__,
    }
    parts.start(run_meta, overwrite=overwrite)
    done = parts.load()
    resumed: set[int] = set()  # cached before an interruption: skipped
    for _, part_ids in done:
        resumed.update(part_ids.tolist())
    seen: set[int] = set()  # computed in this run: a repeat is an error
    scalars_file = parts.dir / "scalars.json"
    scalars = _read_json(scalars_file, "cached scale/bias") if scalars_file.exists() else None
    buffer_ids: list[np.ndarray] = []
    buffer: dict[str, list[np.ndarray]] = {}

    def flush() -> None:
        if buffer_ids:
            part_ids = np.concatenate(buffer_ids)
            data = {k: np.concatenate(v) for k, v in buffer.items()}
            done.append((parts.write(part_ids, data), part_ids))
            buffer_ids.clear()
            buffer.clear()

    iterator: Iterable[Any] = loader
    if progress:
        try:
            from tqdm.auto import tqdm

            iterator = tqdm(loader, desc="reference embeddings", unit="batch")
        except ModuleNotFoundError:  # pragma: no cover - tqdm is optional
            pass
    for batch in iterator:
        batch_ids = _ids_array(get_ids(batch), None, "ids(batch)")
        repeated = [i for i in batch_ids.tolist() if i in seen]
        if repeated or np.unique(batch_ids).size != batch_ids.size:
            raise CacheError(
                "example ids must be unique over the dataset; repeated: "
                f"{repeated[:10] or batch_ids.tolist()[:10]}"
            )
        new = np.array([i not in resumed for i in batch_ids.tolist()], dtype=bool)
        if not new.any():
            continue  # cached before an interruption
        if device is not None:
            batch = map_batch(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, batch)
        out = score_forward(model, batch, forward=fwd, score_batch_size=score_batch_size)
        arrays, these = _as_arrays(out, dtype)
        _ids_array(batch_ids, next(iter(arrays.values())).shape[0], "ids(batch)")
        if scalars is None:
            scalars = these
            _write_json(scalars_file, scalars)
        elif these != scalars:
            raise CacheError(
                f"the model's scale/bias changed between batches ({scalars} then {these}): "
                "the reference must be frozen"
            )
        for k, a in arrays.items():
            buffer.setdefault(k, []).append(a[new])
        buffer_ids.append(batch_ids[new])
        seen.update(batch_ids[new].tolist())
        if sum(len(i) for i in buffer_ids) >= part_size:
            flush()
    flush()
    if not done:
        raise ValueError("loader yielded no examples: nothing to cache")
    with np.load(done[0][0], allow_pickle=False) as z:
        names = sorted(k for k in z.files if k != "ids")
    _consolidate(folder, done, {**run_meta, "arrays": names, "scalars": scalars or {}})
    shutil.rmtree(parts.dir)
    return EmbeddingCache(folder, fingerprint=fingerprint)


# ----------------------------------------------------------------------------- reading


class EmbeddingCache:
    """A verified, memory-mapped reference-output cache; look up examples by id.

    Args:
        path: The cache folder written by :func:`precompute_reference_embeddings`.
        fingerprint: The expected fingerprint (from :func:`model_fingerprint`), or
        model: the reference model, with ``config`` and ``dtype``, to compute it from.
        config: See :func:`model_fingerprint`.
        dtype: The expected storage dtype (default: whatever the cache holds).
        verify: Check the sha256 of every file (reads them once); sizes and shapes are always
            checked.

    Raises:
        CacheError: If the folder is not a finished cache, the fingerprint differs, or a file is
            missing, truncated or corrupted.
        TypeError: If neither ``fingerprint`` nor ``model`` is given.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        /,
        *,
        fingerprint: str | None = None,
        model: Any = None,
        config: Any = None,
        dtype: Any = None,
        verify: bool = True,
    ) -> None:
        self.path = Path(path)
        meta = _read_json(self.path / "meta.json", "cache metadata")
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise CacheError(
                f"{self.path} is not a {FORMAT} version {VERSION} cache "
                f"(format {meta.get('format')!r}, version {meta.get('version')!r})"
            )
        if (fingerprint is None) == (model is None):
            raise TypeError(
                "pass exactly one of fingerprint=... or model=... (with config=... and dtype=...) "
                "so the cache can be checked against what you expect"
            )
        if model is not None:
            fingerprint = model_fingerprint(
                model, config=config, dtype=dtype if dtype is not None else _torch_dtype(meta)
            )
        if meta.get("fingerprint") != fingerprint:
            raise CacheError(
                f"{self.path} was made by a different model, config or dtype: its fingerprint is "
                f"{str(meta.get('fingerprint'))[:12]}... (model {meta.get('model')}, config "
                f"{meta.get('config')!r}, dtype {meta.get('dtype')}), expected "
                f"{str(fingerprint)[:12]}...; recompute it with overwrite=True"
            )
        self.meta = meta
        self.fingerprint: str = fingerprint
        self.dtype: torch.dtype = _torch_dtype(meta)
        self.scalars: dict[str, float] = dict(meta.get("scalars", {}))
        self._arrays = {name: self._open(name, verify) for name in meta["arrays"]}
        self.ids: np.ndarray = np.asarray(self._open("ids", verify))
        if self.ids.size > 1 and not np.all(self.ids[1:] > self.ids[:-1]):
            raise CacheError(f"{self.path / 'ids.npy'} must hold sorted unique ids (corrupted?)")

    def _open(self, name: str, verify: bool) -> np.ndarray:
        entry = self.meta.get("files", {}).get(name)
        if entry is None:
            raise CacheError(f"{self.path / 'meta.json'} lists no file for {name!r} (corrupted?)")
        name_in_meta = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name_in_meta, str) or Path(name_in_meta).name != name_in_meta:
            raise CacheError(
                f"{self.path / 'meta.json'} names the {name!r} file {name_in_meta!r}, which is "
                "not a file name inside the cache folder (corrupted?)"
            )
        file = self.path / name_in_meta
        if not file.is_file():
            raise CacheError(f"{file} is missing")
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise CacheError(f"{file} is truncated or corrupted: {e}") from None
        if list(array.shape) != entry["shape"]:
            raise CacheError(f"{file} has shape {list(array.shape)}, expected {entry['shape']}")
        expected_dtype = "int64" if name == "ids" else self.meta["dtype"]
        if array.dtype != np.dtype(expected_dtype):
            raise CacheError(f"{file} has dtype {array.dtype}, expected {expected_dtype}")
        if verify and _sha256(file) != entry.get("sha256"):
            raise CacheError(f"{file} is corrupted: its sha256 does not match meta.json")
        return array

    def __len__(self) -> int:
        return int(self.ids.size)

    def __contains__(self, example_id: Any) -> bool:
        i = np.searchsorted(self.ids, example_id)
        return bool(i < self.ids.size and self.ids[i] == example_id)

    @property
    def is_pair(self) -> bool:
        """Whether the cache holds image/text embeddings (else per-example ``values``)."""
        return "image" in self._arrays

    def positions(self, ids: Any) -> np.ndarray:
        """The rows of ``ids`` in the cache's arrays.

        Raises:
            KeyError: Naming the ids that are not in the cache.
        """
        q = _ids_array(ids, None, "ids")
        pos = np.searchsorted(self.ids, q)
        found = pos < self.ids.size
        found[found] = self.ids[pos[found]] == q[found]
        if not found.all():
            missing = q[~found]
            raise KeyError(
                f"{missing.size} of {q.size} ids are not in the cache {self.path}: "
                f"{missing[:10].tolist()}{' ...' if missing.size > 10 else ''}"
            )
        return pos

    def lookup(self, ids: Any, /, *, device: Any = None, dtype: Any = None) -> Any:
        """The cached outputs of examples ``ids``, as tensors on ``device``.

        Args:
            ids: 1-D integer example ids (tensor, array or list), in the super-batch's order.
            device: Where to put the tensors (default: CPU).
            dtype: Convert to this dtype (default: the stored one).

        Returns:
            :class:`~jestcore.PairEmbeddings` ``(image, text, scale, bias)`` for a pair cache,
            else the ``(len(ids), ...)`` tensor of values.

        Raises:
            KeyError: If an id is not in the cache.
        """
        pos = self.positions(ids)
        order = np.argsort(pos, kind="stable")  # read the memory map in file order

        def rows(array: np.ndarray) -> torch.Tensor:
            out = np.empty((pos.size, *array.shape[1:]), dtype=array.dtype)
            out[order] = array[pos[order]]
            return torch.from_numpy(out).to(device=device, dtype=dtype)

        if self.is_pair:
            return jestcore.PairEmbeddings(
                rows(self._arrays["image"]),
                rows(self._arrays["text"]),
                self.scalars["scale"],
                self.scalars["bias"],
            )
        return rows(self._arrays["values"])

    def __repr__(self) -> str:
        shapes = {k: list(a.shape) for k, a in self._arrays.items()}
        dtype = self.meta["dtype"]
        return f"EmbeddingCache({str(self.path)!r}, n={len(self)}, {shapes}, dtype={dtype})"


def _torch_dtype(meta: dict[str, Any]) -> torch.dtype:
    names = {v: k for k, v in _DTYPES.items()}
    if meta.get("dtype") not in names:
        raise CacheError(f"cache metadata has an unknown dtype {meta.get('dtype')!r}")
    return names[meta["dtype"]]
