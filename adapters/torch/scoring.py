"""Scoring a super-batch: a model's inference pass in micro-batches, with a cheaper-forward hook.

JEST scores N = b / (1 - f) examples per step (five times the training batch at the paper's
f = 0.8), so the scoring pass is run without autograd and in micro-batches that bound its
memory. The ``forward`` hook decides what the pass computes; it is where a cheaper scoring
forward goes, such as the paper's "Flexi" scoring (the learner at a lower resolution or a larger
patch size):

```python
def flexi(model, batch):
    images, tokens = batch
    small = torch.nn.functional.interpolate(images, scale_factor=0.5, mode="bilinear")
    return model.embed(small, tokens)   # -> PairEmbeddings(image, text, scale, bias)
```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jestcore.adapters.torch.outputs import check_values, is_pair_output, read_pair
from jestcore.adapters.torch.trees import batch_size_of, concat_batches, map_batch

import jestcore
from jestcore._validation import check_int

__all__ = ["default_forward", "score_forward"]


def default_forward(model: Any, batch: Any) -> Any:
    """``model(*batch)`` for a tuple or list, ``model(**batch)`` for a dict, else ``model(batch)``.

    Args:
        model: The model (any callable).
        batch: A (micro-)batch.

    Returns:
        The model's outputs.
    """
    if isinstance(batch, tuple | list) and not hasattr(batch, "_fields"):
        return model(*batch)
    if isinstance(batch, dict):
        return model(**batch)
    return model(batch)


def score_forward(
    model: Any,
    batch: Any,
    /,
    *,
    forward: Callable[[Any, Any], Any] | None = None,
    score_batch_size: int | None = None,
    eval_mode: bool = True,
) -> Any:
    """Runs ``forward(model, micro_batch)`` over ``batch`` without autograd, in micro-batches.

    Args:
        model: The learner or the reference (any callable; an ``nn.Module`` is switched to
            eval mode for the pass and restored afterwards when ``eval_mode``).
        batch: The super-batch: a tensor or a nesting of tuples, lists, dicts and dataclasses
            of tensors, with the examples along the first dimension.
        forward: ``(model, micro_batch) -> outputs``; default :func:`default_forward`. Outputs
            are a tensor with the examples first, or a nesting of them, e.g.
            :class:`~jestcore.PairEmbeddings` (its 0-d ``scale`` and ``bias`` are taken from the
            first micro-batch) or per-example losses. A contrastive model's own output, which
            :func:`~jestcore.adapters.torch.pair_embeddings` reads (a Hugging Face
            ``SiglipOutput`` / ``CLIPOutput``, with the temperature read from ``model``; an
            open_clip tuple or dict), is converted to ``PairEmbeddings`` micro-batch by
            micro-batch, before concatenation.
        score_batch_size: At most this many examples per forward call (default: all at once).
        eval_mode: Put ``nn.Module`` models in eval mode (no dropout, batch-norm running
            statistics) during the pass.

    Returns:
        The outputs for the whole batch: micro-batch outputs concatenated along dimension 0,
        computed under ``torch.inference_mode()`` (a ``PairEmbeddings`` for contrastive
        outputs, ready for :func:`~jestcore.adapters.torch.select_batch`).

    Raises:
        TypeError: If ``model`` or ``forward`` is not callable, ``eval_mode`` not a bool or
            ``score_batch_size`` not an int (NumPy integers are ints).
        ValueError: If ``score_batch_size`` is below 1 or ``batch`` is empty, or converted
            contrastive outputs have a non-positive scale or a non-finite bias (as
            :func:`~jestcore.adapters.torch.pair_embeddings`).

    Warns:
        NotNormalizedWarning: If converted contrastive embeddings are not unit-norm.
    """
    if forward is not None and not callable(forward):
        raise TypeError(
            f"forward must be a callable (model, batch) -> outputs, got {type(forward).__name__}"
        )
    if forward is None and not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    if not isinstance(eval_mode, bool):
        raise TypeError(f"eval_mode must be a bool, got {eval_mode!r}")
    if score_batch_size is not None:
        score_batch_size = check_int("score_batch_size", score_batch_size, low=1)
    forward = forward or default_forward
    n = batch_size_of(batch)
    if n == 0:
        raise ValueError("batch must hold at least one example, got an empty batch (N = 0)")
    step = n if score_batch_size is None else score_batch_size
    modules = list(model.modules()) if eval_mode and isinstance(model, torch.nn.Module) else []
    was_training = [m.training for m in modules]
    try:
        if modules:
            model.eval()
        outputs = []
        names: tuple[str, ...] = ()  # set when contrastive outputs were converted
        with torch.inference_mode():
            for start in range(0, n, step):
                stop = min(start + step, n)
                micro = map_batch(lambda leaf: leaf[start:stop], batch)  # noqa: B023
                out = forward(model, micro)
                if is_pair_output(out) and not isinstance(out, jestcore.PairEmbeddings):
                    names, out = read_pair(out, model=model)
                outputs.append(out)
    finally:
        for m, t in zip(modules, was_training, strict=True):
            m.training = t
    result = outputs[0] if len(outputs) == 1 else concat_batches(outputs)
    if names:
        check_values(names, result)
    return result
