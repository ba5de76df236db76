"""Training-loop integration for jestcore.

PyTorch (``jestcore.adapters.torch``), JAX (``jestcore.adapters.jax``), the embedded demo data,
the reference trainers and the command line. Importing this package imports no framework; each
submodule imports its own.
"""
