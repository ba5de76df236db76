"""The reference cache for JAX: cached embeddings looked up by example id, as JAX arrays.

Write a cache from arrays you computed with :func:`jestcore.adapters.cache.write_cache` (JAX
or NumPy arrays, a fingerprint string of your choosing), or with the PyTorch adapter; read it
with :class:`EmbeddingCache`. The lookup gathers rows of memory-mapped files on the host, so it
runs outside ``jax.jit``: look the super-batch's ids up, then pass the result to the jitted step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jestcore.adapters.cache import ArrayCache

__all__ = ["EmbeddingCache"]


class EmbeddingCache(ArrayCache):
    """A verified, memory-mapped reference-output cache; look up examples by id as JAX arrays.

    The storage, the checks and the arguments are those of
    :class:`jestcore.adapters.cache.ArrayCache`: ``EmbeddingCache(path, fingerprint=...)``,
    where ``path`` is a cache folder or a list of shard folders opened as one.
    """

    def lookup(self, ids: Any, /, *, dtype: Any = None, device: Any = None) -> Any:
        """The cached outputs of examples ``ids`` as JAX arrays (call it outside ``jax.jit``).

        Args:
            ids: 1-D integer example ids (a JAX or NumPy array, or a list), in the super-batch's
                order; concrete values, not traced ones.
            dtype: Convert to this dtype (default: the stored one).
            device: A ``jax.Device`` or ``Sharding`` to put the arrays on (default: JAX's
                default device).

        Returns:
            :class:`~jestcore.PairEmbeddings` ``(image, text, scale, bias)`` of JAX arrays (and
            Python float scale and bias) for a pair cache, else the ``(len(ids), ...)`` array
            of values.

        Raises:
            TypeError: If ``ids`` is traced (inside ``jax.jit``) or not integer ids.
            KeyError: If an id is not in the cache.
        """
        if isinstance(ids, jax.core.Tracer):
            raise TypeError(
                "ids must be concrete: EmbeddingCache.lookup reads files on the host, so call it "
                "outside jax.jit and pass its result to the jitted function"
            )

        def convert(rows: np.ndarray) -> Any:
            return jax.device_put(jnp.asarray(rows, dtype=dtype), device)

        return self._lookup(np.asarray(ids), convert)
