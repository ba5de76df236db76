"""Contrastive models' outputs as :class:`~jestcore.PairEmbeddings`: :func:`pair_embeddings`.

Selection reads a contrastive model's image and text embeddings with the sigmoid loss' scale
(the temperature, **already exponentiated**) and bias. Libraries give them in different shapes:

| output | embeddings | scale | bias |
| --- | --- | --- | --- |
| open_clip tuple | `output[0]`, `output[1]` | `output[2]` | `output[3]` or 0 |
| open_clip dict | `image_features`, `text_features` | `logit_scale` | `logit_bias` or 0 |
| HF `SiglipOutput` | `image_embeds`, `text_embeds` | `exp(model.logit_scale)` | `model.logit_bias`|
| HF `CLIPOutput` | `image_embeds`, `text_embeds` | `exp(model.logit_scale)` | 0 |

open_clip's forward returns ``logit_scale`` already exponentiated (its dict form is
``output_dict=True``). Hugging Face keeps the temperature on the model, in log space
(``model.logit_scale``), so :func:`pair_embeddings` needs ``model=`` for HF outputs.
Transformers is never imported here: HF outputs are recognised by their ``image_embeds`` and
``text_embeds`` fields.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import torch

import jestcore

__all__ = ["NotNormalizedWarning", "pair_embeddings"]

#: Keys of an open_clip ``output_dict=True`` forward output (``logit_bias`` is optional).
OPEN_CLIP_KEYS = ("image_features", "text_features", "logit_scale")

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class NotNormalizedWarning(UserWarning):
    """Embeddings given to :func:`pair_embeddings` are not L2-normalised (unit rows).

    The sigmoid loss, and so the selection, assumes unit-norm embeddings: a model's raw
    ``get_image_features`` / ``encode_image`` output scales every logit by its norms. Python's
    default warning filter shows it once per call site (the line that called
    :func:`pair_embeddings`); ``warnings.simplefilter("error", NotNormalizedWarning)`` makes it
    an error.
    """


def _field(output: Any, name: str) -> Any:
    """``output.name`` or ``output[name]`` (HF ``ModelOutput`` and plain mappings), else None."""
    value = getattr(output, name, None)
    if value is None and isinstance(output, Mapping):
        value = output.get(name)
    return value


def _hf_logit_params(model: Any, kind: str) -> tuple[Any, Any]:
    """The HF model's log-space ``logit_scale`` and its ``logit_bias`` (None for CLIP)."""
    if model is None:
        raise TypeError(
            f"pair_embeddings of a Hugging Face {kind} needs model=: HF keeps the temperature "
            "on the model, in log space (model.logit_scale); call "
            "pair_embeddings(output, model=model)"
        )
    # DistributedDataParallel keeps the model in .module, torch.compile in ._orig_mod.
    for m in (model, getattr(model, "module", None), getattr(model, "_orig_mod", None)):
        scale = getattr(m, "logit_scale", None)
        if isinstance(scale, torch.Tensor):
            return scale, getattr(m, "logit_bias", None)
    raise TypeError(
        f"model must be the Hugging Face model that produced the {kind} (with a logit_scale "
        f"parameter), got {type(model).__name__} without logit_scale"
    )


def _scalar(name: str, value: Any, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a detached 0-d floating tensor (Python numbers on ``like``'s device)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {value.dtype}")
        return value.detach().reshape(())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float or a 0-d tensor, got {type(value).__name__}")
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)


def _embeddings(name: str, x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be (N, d) with N >= 1, got shape {tuple(x.shape)}")
    return x


def is_hf_output(output: Any) -> bool:
    """Whether ``output`` looks like an HF ``SiglipOutput`` / ``CLIPOutput`` (both embeddings)."""
    return _field(output, "image_embeds") is not None and _field(output, "text_embeds") is not None


def is_pair_output(output: Any) -> bool:
    """Whether :func:`pair_embeddings` reads ``output``, by its structure (values unchecked).

    True for a :class:`~jestcore.PairEmbeddings`, an HF output with ``image_embeds`` and
    ``text_embeds``, a mapping with open_clip's keys, and a tuple or list of 3 or 4 shaped
    like open_clip's forward output: two 2-D tensors, then 0-d tensors or real numbers (so a
    model's tuple of per-example tensors is not mistaken for one).
    """
    if isinstance(output, jestcore.PairEmbeddings) or is_hf_output(output):
        return True
    if isinstance(output, Mapping):
        return all(k in output for k in OPEN_CLIP_KEYS)
    if not (isinstance(output, tuple | list) and len(output) in (3, 4)):
        return False
    embeddings, scalars = output[:2], output[2:]
    return all(isinstance(x, torch.Tensor) and x.ndim == 2 for x in embeddings) and all(
        x.ndim == 0 if isinstance(x, torch.Tensor) else _is_real(x) for x in scalars
    )


def _is_real(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def describe(output: Any) -> str:
    """What ``output`` is, for an error message: its type, and its length or keys."""
    kind = type(output).__name__
    if isinstance(output, Mapping):
        keys = [str(k) for k in output]
        return f"{kind} with keys {keys[:8]}" + (" ..." if len(keys) > 8 else "")
    if isinstance(output, tuple | list):
        return f"{kind} of length {len(output)}"
    if isinstance(output, torch.Tensor):
        return f"Tensor of shape {tuple(output.shape)}"
    return kind


def _unpack(
    output: Any, model: Any, prefix: str
) -> tuple[tuple[str, ...], jestcore.PairEmbeddings]:
    """The names (for messages) and the raw values of image, text, scale (exponentiated), bias."""
    kind = type(output).__name__
    if isinstance(output, jestcore.PairEmbeddings):
        return tuple(f"{prefix}.{f}" for f in output._fields), output
    if is_hf_output(output):
        log_scale, bias = _hf_logit_params(model, kind)
        names = (f"{prefix}.image_embeds", f"{prefix}.text_embeds", "exp(model.logit_scale)")
        scale = _scalar("model.logit_scale", log_scale, log_scale).exp()
        return (*names, "model.logit_bias"), jestcore.PairEmbeddings(
            _field(output, "image_embeds"),
            _field(output, "text_embeds"),
            scale,
            0.0 if bias is None else bias,
        )
    if isinstance(output, Mapping) and all(k in output for k in OPEN_CLIP_KEYS):
        keys = (*OPEN_CLIP_KEYS, "logit_bias")
        image, text, scale = (output[k] for k in OPEN_CLIP_KEYS)
        return tuple(f"{prefix}[{k!r}]" for k in keys), jestcore.PairEmbeddings(
            image, text, scale, output.get("logit_bias", 0.0)
        )
    if isinstance(output, tuple | list) and len(output) in (3, 4):
        values = (*output, 0.0)[:4]
        return tuple(f"{prefix}[{i}]" for i in range(4)), jestcore.PairEmbeddings(*values)
    if isinstance(output, tuple | list):
        kind += f" of length {len(output)} (HF return_dict=False tuples are not read)"
    raise TypeError(
        f"pair_embeddings cannot read a {kind}: pass a PairEmbeddings(image, text, scale, bias), "
        "an open_clip output (image_features, text_features, logit_scale[, logit_bias]) as a "
        "tuple or a dict (output_dict=True), or a Hugging Face SiglipOutput / CLIPOutput with "
        "model=model"
    )


def read_pair(
    output: Any, /, *, model: Any = None, prefix: str = "output"
) -> tuple[tuple[str, ...], jestcore.PairEmbeddings]:
    """``output`` as checked-shape ``PairEmbeddings`` with 0-d tensor scale and bias.

    Types and shapes only: nothing is read from the device (see :func:`check_values`). Returns
    the names of the four fields for messages too.
    """
    names, pair = _unpack(output, model, prefix)
    image, text = _embeddings(names[0], pair.image), _embeddings(names[1], pair.text)
    if image.shape[0] != text.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} must hold the same N pairs, got shapes "
            f"{tuple(image.shape)} and {tuple(text.shape)}"
        )
    scale, bias = _scalar(names[2], pair.scale, image), _scalar(names[3], pair.bias, image)
    return names, jestcore.PairEmbeddings(image, text, scale, bias)


def _norm_deviation(x: torch.Tensor) -> torch.Tensor:
    """``max |‖row‖ - 1|`` of ``x``, computed in float32 at least, as a float32 0-d tensor."""
    norms = torch.linalg.vector_norm(
        x.detach(), dim=1, dtype=torch.promote_types(x.dtype, torch.float32)
    )
    return (norms - 1).abs().max().float()


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside this package, for ``warnings.warn``."""
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        level, frame = level + 1, frame.f_back
    return level


def check_values(names: tuple[str, ...], pair: jestcore.PairEmbeddings) -> None:
    """Checks a :func:`read_pair` result's scale and bias; warns on non-unit-norm rows.

    Reading the scale, the bias and the row norms is one device synchronisation.
    """
    deviation = [_norm_deviation(x) for x in (pair.image, pair.text)]
    values = torch.stack([pair.scale.float(), pair.bias.float(), *deviation]).cpu().tolist()
    if not (math.isfinite(values[0]) and values[0] > 0):
        raise ValueError(
            f"{names[2]} must be a positive finite temperature, already exponentiated, got "
            f"{values[0]} (HF model.logit_scale is in log space: pass the HF output with "
            "model=model, or exp() the value)"
        )
    if not math.isfinite(values[1]):
        raise ValueError(f"{names[3]} must be finite, got {values[1]}")
    tol = min(4 * math.sqrt(torch.finfo(pair.image.dtype).eps), 0.05)
    for name, dev in zip(names[:2], values[2:], strict=True):
        if not dev <= tol:
            warnings.warn(
                f"{name} is not L2-normalised (a row norm differs from 1 by {dev:.3g}): "
                "selection assumes unit-norm embeddings; divide by the row norms, e.g. "
                "torch.nn.functional.normalize(x, dim=-1)",
                NotNormalizedWarning,
                stacklevel=_caller_stacklevel(),
            )


def pair_embeddings(output: Any, /, *, model: Any = None) -> jestcore.PairEmbeddings:
    """A contrastive model's forward output as :class:`~jestcore.PairEmbeddings`.

    Reads:

    * a :class:`~jestcore.PairEmbeddings`: checked and returned as is;
    * an open_clip output: the tuple ``(image_features, text_features, logit_scale)`` or
      ``(..., logit_bias)`` (SigLIP models), or the dict of ``output_dict=True`` with those
      keys. open_clip's forward returns ``logit_scale`` **already exponentiated**; the bias is
      0 when absent;
    * a Hugging Face transformers ``SiglipOutput`` or ``CLIPOutput`` (any output with
      ``image_embeds`` and ``text_embeds``, which HF L2-normalises in the forward), with
      ``model=`` the model that produced it: ``scale = exp(model.logit_scale)`` (HF keeps it
      **in log space**) and ``bias = model.logit_bias``, or 0 for CLIP, which has none.

    The scale and bias come back as detached 0-d tensors on their device (nothing moves to the
    CPU); the embeddings are returned as given. Reading the scale, the bias and the row norms
    for the checks is one device synchronisation.

    Args:
        output: The forward output.
        model: The Hugging Face model that produced ``output`` (also when wrapped in
            ``DistributedDataParallel`` or ``torch.compile``); not used for other outputs.

    Returns:
        The ``PairEmbeddings(image, text, scale, bias)``.

    Raises:
        TypeError: If ``output`` is none of the above (the message names what was received
            and what to pass), or is an HF output without ``model=``.
        ValueError: If the scale is not positive and finite, the bias is not finite, or the
            embeddings are not ``(N, d)`` with the same ``N``.

    Warns:
        NotNormalizedWarning: If a row of the image or text embeddings does not have unit
            norm (within ``min(4 * sqrt(eps), 0.05)`` of the dtype); Python's default filter
            shows it once per call site.

    Example:
        >>> import torch
        >>> x = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
        >>> pair = pair_embeddings((x, x, torch.tensor(10.0)))  # open_clip tuple, exp-ed scale
        >>> float(pair.scale), float(pair.bias)
        (10.0, 0.0)
    """
    names, pair = read_pair(output, model=model)
    check_values(names, pair)
    return output if isinstance(output, jestcore.PairEmbeddings) else pair
