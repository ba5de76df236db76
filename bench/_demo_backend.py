"""A demo trainer backend for ``bench/demo_evidence.py``: PyTorch with Adam ``beta2 = 0.999``.

The library's recipe trains every filtering method with ``beta2 = 0.95``
(:func:`jestcore.adapters.recipe.adam_beta2`, the paper's Appendix A.2) and
:class:`jestcore.adapters.demo.DemoConfig` has no field for it; the PyTorch trainer takes an
explicit ``adam_beta2``. This module is :mod:`jestcore.adapters.demo.torch_backend` with that
argument fixed to :data:`BETA2` (the previous default), so that :func:`run_demo` can run it, in
spawned workers too (they import it by name from ``bench/``, which is on their ``sys.path``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from jestcore.adapters.demo import torch_backend
from jestcore.adapters.demo.app import Curve, DemoConfig, Metrics
from jestcore.adapters.demo.digits import Digits
from jestcore.adapters.recipe import UNIFORM_BETA2

import jestcore

#: Adam's beta2 of every learner this backend trains (the value before the recipe's 0.95).
BETA2 = UNIFORM_BETA2

embed = torch_backend.embed
train_reference = torch_backend.train_reference


def train_learner(
    data: Digits,
    reference: jestcore.PairEmbeddings | None,
    method: str,
    config: DemoConfig,
    seed: int,
    *,
    on_eval: Callable[[int, Metrics], None] | None = None,
) -> Curve:
    """:func:`jestcore.adapters.demo.torch_backend.train_learner` with ``adam_beta2 = BETA2``."""
    original: Any = torch_backend.train
    torch_backend.train = functools.partial(original, adam_beta2=BETA2)  # type: ignore[assignment]
    try:
        return torch_backend.train_learner(data, reference, method, config, seed, on_eval=on_eval)
    finally:
        torch_backend.train = original
