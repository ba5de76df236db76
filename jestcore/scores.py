"""The pairwise sigmoid (SigLIP) loss and the three selection scores."""

from __future__ import annotations

import math
import sys
from typing import Any

from jestcore import _validation as v
from jestcore._namespace import device_of, namespace_of, same_device
from jestcore.backends import get_backend

__all__ = ["easy_reference", "hard_learner", "learnability", "sigmoid_loss_matrix"]


def check_scale_bias(
    scale: Any, bias: Any, xp: Any, dtype: Any = None, *, prefix: str = "", values: bool = True
) -> None:
    """``scale`` and ``bias`` must be finite real Python numbers or 0-d real floating arrays.

    With ``dtype`` (the dtype the logits are computed in), a Python number must also be finite
    in it: ``1e39`` times float32 embeddings would be infinite, and the losses NaN. Messages
    name them with ``prefix`` (e.g. ``"reference."``). ``values=False`` leaves the values of
    arrays unread (a caller that reads them with others, in one host synchronisation).
    """
    for name, value in ((f"{prefix}scale", scale), (f"{prefix}bias", bias)):
        if isinstance(value, bool) or value is None:
            raise TypeError(f"{name} must be a float or a 0-d floating array, got {value!r}")
        if isinstance(value, int) and abs(value) > sys.float_info.max:
            raise ValueError(
                f"{name} must be finite, got an int of {value.bit_length()} bits (beyond floats)"
            )
        if isinstance(value, int | float):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
            if dtype is not None and abs(value) > float(xp.finfo(dtype).max):
                raise ValueError(f"{name} must be finite in {dtype}, got {value}")
            continue
        if (
            not hasattr(value, "shape")
            or value.ndim != 0
            or namespace_of(value, name=name) is not xp
            or not xp.isdtype(value.dtype, "real floating")
        ):
            shape = getattr(value, "shape", None)
            raise TypeError(
                f"{name} must be a float or a 0-d floating array of the inputs' namespace, got "
                f"{type(value).__name__}"
                + (f" of shape {tuple(shape)} and dtype {value.dtype}" if shape is not None else "")
            )
        if values and not get_backend(xp).is_lazy(value) and not bool(xp.isfinite(value)):
            raise ValueError(f"{name} must be finite, got {float(value)}")


def sigmoid_loss_matrix(image: Any, text: Any, /, *, scale: Any, bias: Any) -> Any:
    """The pairwise sigmoid loss ``l_ij = -log sigmoid(z_ij * (scale * <image_i, text_j> + bias))``.

    ``z_ij`` is +1 on the diagonal (matching pairs) and -1 elsewhere, so the SigLIP loss of a
    batch B is the sum of this matrix over ``B x B``.

    Args:
        image: ``(N, d)`` image embeddings (usually L2-normalised).
        text: ``(N, d)`` text embeddings of the same pairs.
        scale: The model's temperature, already exponentiated (a float or a 0-d array).
        bias: The model's logit bias (a float or a 0-d array).

    Returns:
        The ``(N, N)`` loss matrix, entry ``(i, j)`` pairing image i with text j.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If the shapes differ, arrays are on different devices, or (outside
            tracing) an embedding, ``scale`` or ``bias`` is NaN or infinite.

    Example:
        >>> import numpy as np
        >>> e = np.eye(2)
        >>> np.round(sigmoid_loss_matrix(e, e, scale=10.0, bias=-5.0), 4).tolist()
        [[0.0067, 0.0067], [0.0067, 0.0067]]
    """
    xp = namespace_of(image, text, name="image, text")
    v.check_floating("image", image, xp, ndim=2)
    v.check_floating("text", text, xp, ndim=2)
    if image.shape != text.shape:
        raise ValueError(
            f"image and text must have the same shape (N, d), got {tuple(image.shape)} "
            f"and {tuple(text.shape)}"
        )
    check_scale_bias(scale, bias, xp, xp.result_type(image.dtype, text.dtype))
    same_device({"image": image, "text": text, "scale": scale, "bias": bias})
    backend = get_backend(xp)
    v.check_finite("image", image, xp, backend)
    v.check_finite("text", text, xp, backend)
    return pair_losses(scale * (image @ xp.matrix_transpose(text)) + bias, 0, xp, backend)


def pair_losses(logits: Any, row_offset: int, xp: Any, backend: Any) -> Any:
    """The sigmoid losses ``softplus(-z_ij * logit_ij)`` of a block of pairwise logits.

    Row ``r`` of ``logits`` pairs image ``row_offset + r`` with every text ``0..``, so the
    matching pairs (``z = +1``) are the entries ``(r, row_offset + r)``: their loss is taken from
    their own logit, never as the difference of two large terms.
    """
    rows = xp.arange(row_offset, row_offset + logits.shape[0], device=device_of(logits))
    cols = xp.arange(logits.shape[1], device=device_of(logits))
    return backend.softplus(xp.where(rows[:, None] == cols[None, :], -logits, logits))


def _check_losses(**losses: Any) -> Any:
    xp = namespace_of(*losses.values(), name=", ".join(losses))
    for name, loss in losses.items():
        v.check_floating(name, loss, xp)
    shapes = {name: tuple(loss.shape) for name, loss in losses.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{' and '.join(shapes)} must have the same shape, got {shapes}")
    same_device(losses)
    return xp


def learnability(learner_loss: Any, reference_loss: Any, /) -> Any:
    """Learnability ``learner_loss - reference_loss``: not yet learnt, but learnable.

    Elementwise on arrays of any (equal) shape: per-example losses or pairwise loss matrices.

    Example:
        >>> import numpy as np
        >>> learnability(np.array([2.0, 0.5]), np.array([0.5, 0.5])).tolist()
        [1.5, 0.0]
    """
    _check_losses(learner_loss=learner_loss, reference_loss=reference_loss)
    return learner_loss - reference_loss


def hard_learner(learner_loss: Any, /) -> Any:
    """The hard-learner score: the learner's loss itself (high loss, high score).

    Example:
        >>> import numpy as np
        >>> hard_learner(np.array([2.0, 0.5])).tolist()
        [2.0, 0.5]
    """
    _check_losses(learner_loss=learner_loss)
    return learner_loss


def easy_reference(reference_loss: Any, /) -> Any:
    """The easy-reference score ``-reference_loss`` (low reference loss, high score).

    Example:
        >>> import numpy as np
        >>> easy_reference(np.array([2.0, 0.5])).tolist()
        [-2.0, -0.5]
    """
    _check_losses(reference_loss=reference_loss)
    return -reference_loss
