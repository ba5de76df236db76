"""JEST in PyTorch training loops, single process or ``torch.distributed``.

* :func:`select_batch`: one call from a super-batch (a tensor or any nesting of tuples, lists,
  dicts and dataclasses of tensors) and the learner's and reference's outputs on it to the
  selected sub-batch and its indices; ``loss="softmax"`` scores a CLIP model under its
  softmax loss (the paper's Algorithm 3) instead of SigLIP's sigmoid loss.
* :class:`JESTSelector`: the same in a training loop, with per-step seeds, uniform warm-up,
  ``state_dict()`` / ``load_state_dict()`` for exact resumption, and logging statistics.
* :func:`pair_embeddings`: a contrastive model's forward output (open_clip, Hugging Face
  transformers ``SiglipOutput`` / ``CLIPOutput``) as :class:`~jestcore.PairEmbeddings`.
* :func:`score_forward`: a model's inference pass over a super-batch in micro-batches, with a
  hook for a cheaper scoring forward (Flexi).
* :func:`precompute_reference_embeddings` and :class:`EmbeddingCache`: the frozen reference's
  embeddings, computed once, stored safely, looked up by example id.
* :func:`train`, :class:`DualEncoder`, :func:`siglip_loss`, :func:`clip_loss`: a minimal
  SigLIP (or, with ``loss="softmax"``, CLIP) dual-encoder reference trainer for user arrays and
  models (:mod:`jestcore.adapters.torch.trainer`).
* ``scope="local"`` / ``"global"``: selection per rank or over all ranks' super-batches
  (:mod:`jestcore.adapters.torch.distributed`).
"""

import array_api_compat as _compat
import torch as _torch
from jestcore.adapters.torch.cache import (
    CacheError,
    EmbeddingCache,
    model_fingerprint,
    precompute_reference_embeddings,
)
from jestcore.adapters.torch.distributed import exchange_selected
from jestcore.adapters.torch.outputs import NotNormalizedWarning, pair_embeddings
from jestcore.adapters.torch.scoring import score_forward
from jestcore.adapters.torch.selection import JESTSelector, SelectedBatch, select_batch
from jestcore.adapters.torch.trainer import (
    BagOfWords,
    DualEncoder,
    ImageMLP,
    clip_loss,
    embed_arrays,
    siglip_loss,
    train,
)
from jestcore.adapters.torch.trees import batch_size_of, concat_batches, take_batch
from jestcore.backends import get_backend as _get_backend

# Import the native backend now: an import inside torch.compile(fullgraph=True) is a graph break.
_get_backend(_compat.array_namespace(_torch.empty(0)))

__all__ = [
    "BagOfWords",
    "CacheError",
    "DualEncoder",
    "EmbeddingCache",
    "ImageMLP",
    "JESTSelector",
    "NotNormalizedWarning",
    "SelectedBatch",
    "batch_size_of",
    "clip_loss",
    "concat_batches",
    "embed_arrays",
    "exchange_selected",
    "model_fingerprint",
    "pair_embeddings",
    "precompute_reference_embeddings",
    "score_forward",
    "select_batch",
    "siglip_loss",
    "take_batch",
    "train",
]
