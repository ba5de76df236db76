"""The one launcher of checks that need several (simulated) XLA devices.

JAX fixes its device count at start-up, and the suite runs on one CPU device, so such checks
run in a child interpreter started with ``XLA_FLAGS=--xla_force_host_platform_device_count=D``:
a test module defines functions ``check_*``, ends with ``if __name__ == "__main__":
xla_devices.child_main(globals())``, and gets their results with :func:`run_checks` (one pytest
test per check, each reporting ``"ok"`` or the check's traceback).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any


def check_names(namespace: dict[str, Any]) -> list[str]:
    """The names of the ``check_*`` functions of a module namespace, sorted."""
    return sorted(name for name in namespace if name.startswith("check_"))


def run_checks(script: str, devices: int, out: Path, *, timeout: float = 600) -> dict[str, str]:
    """Runs ``script``'s checks in a child with ``devices`` CPU devices; results by check name.

    Raises:
        AssertionError: If the child fails (its output is in the message).
    """
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-W", "error", script, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"the {devices}-device child failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(out.read_text())


def child_main(namespace: dict[str, Any]) -> None:
    """The child's side: runs every check, writes ``{name: "ok" or traceback}`` to ``argv[1]``."""
    results = {}
    for name in check_names(namespace):
        try:
            namespace[name]()
            results[name] = "ok"
        except Exception:  # each check reports its own failure
            results[name] = traceback.format_exc()
    Path(sys.argv[1]).write_text(json.dumps(results))
