"""JAX integration: JEST inside a jitted train step, on one device or sharded over a mesh.

* :func:`joint_select_embeddings` and :func:`joint_select`: aliases of the spec's selections
  (its checks eagerly, then the spec itself under ``jax.jit``, whose chunk and block loops the
  JAX backend runs as ``lax.scan``: one compilation per shape, fast to compile).
* :class:`JESTSelector` and :class:`SelectionState`: static configuration plus a pytree state
  ``(seed, step)`` that checkpoints with the rest of the training state.
* :func:`gather`: the selected examples of a pytree batch.
* :func:`select_sharded` and :func:`gather_sharded`: super-batches sharded along a mesh axis,
  ``scope="local"`` (per device) or ``scope="global"`` (exact over the whole super-batch).
"""

from jestcore.adapters.jax.cache import EmbeddingCache
from jestcore.adapters.jax.selection import gumbel_rows, joint_select, joint_select_embeddings
from jestcore.adapters.jax.sharding import SCOPES, gather_sharded, select_sharded
from jestcore.adapters.jax.state import JESTSelector, SelectionState, init_state
from jestcore.adapters.jax.trees import gather

__all__ = [
    "SCOPES",
    "EmbeddingCache",
    "JESTSelector",
    "SelectionState",
    "gather",
    "gather_sharded",
    "gumbel_rows",
    "init_state",
    "joint_select",
    "joint_select_embeddings",
    "select_sharded",
]
