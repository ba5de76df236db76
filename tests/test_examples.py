"""The examples run: an ordinary PyTorch loop and a jitted JAX step, each with JEST added."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from children import run_ok

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, tmp_path: Path, **env: str) -> tuple[dict[str, Any], str]:
    """Runs ``examples/name`` for 30 steps (warnings are errors); its summary and output."""
    out = tmp_path / "summary.json"
    args = ["-W", "error", EXAMPLES / name, "--steps", "30", "--json", out]
    proc = run_ok(args, cwd=tmp_path, env={**os.environ, **env})
    return json.loads(out.read_text()), proc.stdout


def assert_trains_and_avoids_noisy_pairs(summary: dict[str, Any], stdout: str) -> None:
    assert summary["last_loss"] < 0.5 * summary["first_loss"]
    # learnability against a reference trained on clean pairs: mismatched pairs (a quarter of
    # the pool) are selected clearly less often than at random (1920 selections in all)
    assert abs(summary["noisy_in_pool"] - 0.25) < 0.02
    assert summary["noisy_selected"] < 0.8 * summary["noisy_in_pool"]
    assert "noisy pairs:" in stdout


def test_torch_minimal_example_trains_and_avoids_noisy_pairs(tmp_path):
    summary, stdout = run_example("torch_minimal.py", tmp_path)
    assert summary["selector"]["step"] == 30  # one selection per step
    assert_trains_and_avoids_noisy_pairs(summary, stdout)


def test_jax_minimal_example_trains_compiles_once_and_avoids_noisy_pairs(tmp_path):
    summary, stdout = run_example("jax_minimal.py", tmp_path, JAX_PLATFORMS="cpu")
    assert summary["compilations"] == 1  # one program for every step
    assert summary["selection_step"] == 30  # the selection state advanced once per step
    assert_trains_and_avoids_noisy_pairs(summary, stdout)
