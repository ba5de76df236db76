"""Runs the code of a docs/recipes page in this process, so a test can check what it built.

The page's fenced ``python`` blocks (those not marked ``<!-- not-runnable: ... -->``) run in
order in one namespace, as tests/test_docs.py runs them; the test then asserts on the names the
page defined. The tested code is therefore the page's code, never a copy of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_docs import parse_blocks

RECIPES = Path(__file__).resolve().parents[1] / "docs" / "recipes"


def run_page(name: str) -> dict[str, Any]:
    """The namespace after running the python blocks of ``docs/recipes/<name>``."""
    namespace: dict[str, Any] = {"__name__": "__main__"}  # as tests/test_docs.py runs it
    for block in parse_blocks(RECIPES / name):
        if block.lang == "python" and block.skip_reason is None:
            exec(compile(block.code, block.where, "exec"), namespace)
    return namespace
