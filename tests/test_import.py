"""Importing jestcore loads no framework; the docstring examples of its modules run."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import jestcore.backends
import pytest
from children import run_python

import jestcore

FRAMEWORKS = ("numpy", "torch", "jax", "jaxlib", "tensorflow", "cupy")


def test_import_jestcore_loads_no_framework():
    out = run_python(
        f"""
        import sys
        import jestcore
        import jestcore.backends
        assert callable(jestcore.joint_select)
        print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))
        """
    )
    assert out.strip() == "[]"


def test_the_subprocess_check_sees_an_import():
    # the check above can fail: importing a module that loads numpy is seen
    out = run_python(
        f"""
        import sys
        import jestcore, jestcore.backends.numpy
        print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))
        """
    )
    assert out.strip() == "['numpy']"


def test_public_names_are_exported():
    for name in jestcore.__all__:
        assert hasattr(jestcore, name), name
        assert getattr(jestcore, name).__doc__, f"{name} has no docstring"


def spec_modules() -> list[str]:
    """Every module of the specification and of jestcore.backends (found on disk)."""
    names = ["jestcore", "jestcore.backends"]
    for package in (jestcore, jestcore.backends):
        names += [
            f"{package.__name__}.{m.name}"
            for m in pkgutil.iter_modules(package.__path__)
            if not m.ispkg
        ]
    return sorted(names)


def test_every_public_module_has_doctest_examples():
    modules_with_examples = {
        name
        for name in spec_modules()
        if any(t.examples for t in doctest.DocTestFinder().find(importlib.import_module(name)))
    }
    for name in ("jestcore.random", "jestcore.scores", "jestcore.selection", "jestcore.streaming"):
        assert name in modules_with_examples, f"{name} has no docstring example"


@pytest.mark.parametrize("name", spec_modules())
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, verbose=False
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
