"""Training-loop integration for jestcore.

PyTorch (``jestcore.adapters.torch``) and JAX (``jestcore.adapters.jax``), each with a reference
trainer; the recipe they share (``jestcore.adapters.recipe``); and, apart from the library, the
demo application (``jestcore.adapters.demo``: embedded data, runner, report, command line), which
nothing else imports. Importing this package imports no framework; each submodule imports its
own.
"""
