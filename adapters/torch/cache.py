"""A disk cache of the frozen reference model's per-example embeddings, keyed by example id.

For the pairwise sigmoid loss, a reference *loss* depends on which examples share the
super-batch, but the reference's *embeddings* of an example do not, so they are what is cached
(for per-example losses, cache the losses themselves: any per-example tensor works). The same
holds for the softmax (CLIP) loss, whose negatives range over the super-batch: one embeddings
cache serves ``loss="sigmoid"`` and ``loss="softmax"`` alike (the loss is chosen at selection,
and the softmax ignores the cached bias), so the cache records no loss. A cache of per-example
values holds whatever ``forward`` computed: name its loss in ``config`` (fingerprinted).

The storage is framework-neutral (:mod:`jestcore.adapters.cache`: the folder layout, the
writer's lock, atomic writes, checksummed parts and metadata, shard folders opened as one);
this module adds what is PyTorch's: the model's fingerprint, running the model over a loader,
and lookups as tensors.

One writer per folder: a writer holds the folder's lock while it writes, and a second writer
gets a :class:`CacheError` naming the holder (or waits ``timeout`` seconds). For several ranks,
give each rank its own folder and open them together:
``EmbeddingCache([root / f"rank-{r}" for r in range(world)], model=...)``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jestcore.adapters.cache import (
    ArrayCache,
    CacheError,
    Paths,
    _as_paths,
    _check_timeout,
    _open_or_write,
    _Writer,
    ids_array,
    read_meta,
    run_meta,
)
from jestcore.adapters.torch.outputs import describe
from jestcore.adapters.torch.scoring import default_forward, score_forward
from jestcore.adapters.torch.trees import map_batch

import jestcore
from jestcore import _validation as v

__all__ = [
    "CacheError",
    "EmbeddingCache",
    "model_fingerprint",
    "precompute_reference_embeddings",
]

_DTYPES = {torch.float16: "float16", torch.float32: "float32", torch.float64: "float64"}


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
        "forward must return jestcore.PairEmbeddings(image, text, scale, bias), a contrastive "
        "model's output that pair_embeddings reads (a Hugging Face SiglipOutput / CLIPOutput, "
        "an open_clip tuple or dict), or a tensor of per-example values, got "
        f"{describe(out)}"
    )


def _scalar(x: Any) -> Any:
    return x.detach() if isinstance(x, torch.Tensor) else x


def _ids_array(ids: Any, n: int | None, what: str) -> np.ndarray:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    return ids_array(ids, n, what)


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
    timeout: float = 0.0,
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
            of per-example values (e.g. reference losses of a per-example loss). A
            contrastive model's own output (a Hugging Face ``SiglipOutput`` / ``CLIPOutput``,
            an open_clip tuple or dict) is converted with
            :func:`~jestcore.adapters.torch.pair_embeddings`, the temperature of an HF output
            read from ``model``; so the default forward caches such a model as it is.
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
        timeout: Seconds to wait for another writer of ``path`` to finish (its lock); the
            default ``0`` fails at once. Then, a finished cache with this fingerprint is
            returned as is. Several ranks should rather write one folder each (see
            :class:`EmbeddingCache`).

    Returns:
        The finished :class:`EmbeddingCache`, already verified.

    Raises:
        CacheError: If ``path`` holds a cache (or a partial one) with a different fingerprint
            and ``overwrite`` is false, or a damaged finished cache, or ids repeat, or another
            writer holds the folder's lock after ``timeout`` seconds (the message names its
            pid and host), or a part no longer holds the ids recorded for it.
        TypeError: If an argument has the wrong type (e.g. ``model`` not an ``nn.Module``,
            ``dtype`` not float16/32/64, ``part_size`` not an int; NumPy integers are ints).
        ValueError: If ``part_size`` or ``score_batch_size`` is below 1, ``path`` is a file,
            or the loader yields no examples.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike folder, got {type(path).__name__}")
    if isinstance(loader, str | bytes) or not hasattr(loader, "__iter__"):
        raise TypeError(f"loader must be an iterable of batches, got {type(loader).__name__}")
    for name, fn in (("ids", ids), ("forward", forward)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be a callable or None, got {type(fn).__name__}")
    part_size = v.check_int("part_size", part_size, low=1)
    if score_batch_size is not None:  # the rule of score_forward, checked before any work
        score_batch_size = v.check_int("score_batch_size", score_batch_size, low=1)
    for name, flag in (("overwrite", overwrite), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    timeout = _check_timeout(timeout)
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path must be a folder, but {folder} is a file")
    fingerprint = model_fingerprint(model, config=config, dtype=dtype)  # checks model, dtype
    meta = run_meta(
        fingerprint, config=config, dtype=_dtype_name(dtype), model=type(model).__qualname__
    )

    def write() -> None:
        writer = _Writer(folder, meta, overwrite=overwrite)
        _run(model, loader, writer, ids or _default_ids, forward or _default_cache_forward,
             dtype=dtype, device=device, score_batch_size=score_batch_size,
             part_size=part_size, progress=progress)  # fmt: skip
        writer.commit()

    cache: EmbeddingCache = _open_or_write(
        folder,
        fingerprint,
        overwrite=overwrite,
        timeout=timeout,
        open_cache=lambda: EmbeddingCache(folder, fingerprint=fingerprint),
        write=write,
    )
    return cache


def _run(
    model: Any,
    loader: Iterable[Any],
    writer: _Writer,
    get_ids: Callable[[Any], Any],
    fwd: Callable[[Any, Any], Any],
    *,
    dtype: torch.dtype,
    device: Any,
    score_batch_size: int | None,
    part_size: int,
    progress: bool,
) -> None:
    """Runs the model over the batches not yet cached, writing a part every ``part_size``."""
    seen: set[int] = set()  # computed in this run: a repeat is an error
    buffer_ids: list[np.ndarray] = []
    buffer: dict[str, list[np.ndarray]] = {}

    def flush() -> None:
        if buffer_ids:
            writer.write(
                np.concatenate(buffer_ids), {k: np.concatenate(v) for k, v in buffer.items()}
            )
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
        new = np.array([i not in writer.resumed for i in batch_ids.tolist()], dtype=bool)
        if not new.any():
            continue  # cached before an interruption
        if device is not None:
            batch = map_batch(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, batch)
        out = score_forward(model, batch, forward=fwd, score_batch_size=score_batch_size)
        arrays, these = _as_arrays(out, dtype)
        _ids_array(batch_ids, next(iter(arrays.values())).shape[0], "ids(batch)")
        writer.check_scalars(these)
        for k, a in arrays.items():
            buffer.setdefault(k, []).append(a[new])
        buffer_ids.append(batch_ids[new])
        seen.update(batch_ids[new].tolist())
        if sum(len(i) for i in buffer_ids) >= part_size:
            flush()
    flush()


# ----------------------------------------------------------------------------- reading


class EmbeddingCache(ArrayCache):
    """A verified, memory-mapped reference-output cache; look up examples by id as tensors.

    Several folders open as one cache: the recipe for ``N`` ranks is that each rank writes its
    own shard folder (``precompute_reference_embeddings(model, its_loader, root /
    f"rank-{rank}")``), all ranks meet at a barrier, and each opens
    ``EmbeddingCache([root / f"rank-{r}" for r in range(world)], model=model)``.

    Args:
        path: The cache folder written by :func:`precompute_reference_embeddings`, or a list
            of such folders (shards with the same fingerprint and disjoint ids).
        fingerprint: The expected fingerprint (from :func:`model_fingerprint`), or
        model: the reference model, with ``config`` and ``dtype``, to compute it from.
        config: See :func:`model_fingerprint`.
        dtype: The expected storage dtype (default: whatever the cache holds).
        verify: Check the sha256 of every file (reads them once); the metadata (its own
            checksum and every field), sizes and shapes are always checked.

    Raises:
        CacheError: If the folder is not a finished cache, the fingerprint differs, or the
            metadata or a file is missing, malformed, truncated or corrupted.
        TypeError: If neither ``fingerprint`` nor ``model`` is given.
    """

    def __init__(
        self,
        path: Paths,
        /,
        *,
        fingerprint: str | None = None,
        model: Any = None,
        config: Any = None,
        dtype: Any = None,
        verify: bool = True,
    ) -> None:
        first = _as_paths(path)[0]
        if (fingerprint is None) == (model is None):
            read_meta(first)  # a folder that is not a cache is named first
            raise TypeError(
                "pass exactly one of fingerprint=... or model=... (with config=... and dtype=...) "
                "so the cache can be checked against what you expect"
            )
        if model is not None:
            if dtype is None:
                dtype = _torch_dtype(read_meta(first)["dtype"])
            fingerprint = model_fingerprint(model, config=config, dtype=dtype)
        assert fingerprint is not None
        super().__init__(path, fingerprint=fingerprint, verify=verify)

    @property
    def dtype(self) -> torch.dtype:
        """The storage dtype, as a ``torch.dtype``."""
        return _torch_dtype(self.meta["dtype"])

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
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        return self._lookup(ids, lambda a: torch.from_numpy(a).to(device=device, dtype=dtype))


def _torch_dtype(name: str) -> torch.dtype:
    return {v: k for k, v in _DTYPES.items()}[name]
