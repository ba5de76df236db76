"""The JEST demo: an application built on jestcore, apart from the library.

``jestcore demo`` trains small SigLIP dual encoders on embedded noisy digits with each selection
method and reports steps and FLOPs to uniform sampling's final accuracy. Its parts:

* :mod:`jestcore.adapters.demo.app`: the recipe, runner and report (re-exported here);
* :mod:`jestcore.adapters.demo.digits` and :mod:`jestcore.adapters.demo.text`: the embedded
  data and its captions' tokenizer;
* :mod:`jestcore.adapters.demo.synthetic`: a synthetic super-batch for ``jestcore select-demo``;
* :mod:`jestcore.adapters.demo.costs`: the compute accounting;
* :mod:`jestcore.adapters.demo.torch_backend` and :mod:`jestcore.adapters.demo.jax_backend`: the
  demo's trainer protocol on the reference trainers;
* :mod:`jestcore.adapters.demo.cli`: the ``jestcore`` command line.

The library never imports this package: the trainers and the selection adapters share only the
neutral :mod:`jestcore.adapters.recipe` with it.
"""

import importlib
from typing import Any

from jestcore.adapters.demo import costs, digits, synthetic, text  # noqa: F401 (submodules)
from jestcore.adapters.demo.app import (
    BACKENDS,
    METHOD_SPECS,
    METHODS,
    Curve,
    DemoConfig,
    MethodSpec,
    Metrics,
    Trainer,
    default_workers,
    eval_steps,
    evaluate,
    format_table,
    learning_rate,
    load_backend,
    method_step_flops,
    model_flops,
    plot_curves,
    recipe_record,
    reference_batch_indices,
    run_demo,
    select_sub_batch,
    selection_seed,
    summarize,
    super_batch_indices,
)

__all__ = [
    "BACKENDS",
    "Curve",
    "DemoConfig",
    "METHODS",
    "METHOD_SPECS",
    "MethodSpec",
    "Metrics",
    "Trainer",
    "default_workers",
    "eval_steps",
    "evaluate",
    "format_table",
    "learning_rate",
    "load_backend",
    "method_step_flops",
    "model_flops",
    "plot_curves",
    "recipe_record",
    "reference_batch_indices",
    "run_demo",
    "select_sub_batch",
    "selection_seed",
    "summarize",
    "super_batch_indices",
]

#: Submodules loaded on first access: they import a framework or are the command line.
_LAZY = ("cli", "jax_backend", "torch_backend")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
