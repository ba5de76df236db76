"""One way for tests to run a child Python process and require that it succeeds."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def run_ok(
    args: Sequence[str | Path], *, timeout: float = 600, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Runs ``python *args`` (text output captured); fails the test, with its output, on error."""
    proc = subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return proc


def run_python(code: str) -> str:
    """Runs ``code`` (dedented) in a fresh interpreter; returns what it printed."""
    return run_ok(["-c", textwrap.dedent(code)], timeout=120).stdout
