"""examples/torch_minimal.py runs: an ordinary PyTorch loop with JEST added in a few lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torch_minimal.py"


def test_torch_minimal_example_trains_and_avoids_noisy_pairs(tmp_path):
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLE), "--steps", "30", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    summary = json.loads(out.read_text())
    assert summary["selector"]["step"] == 30  # one selection per step
    assert summary["last_loss"] < 0.5 * summary["first_loss"]
    # learnability against a reference trained on clean pairs: mismatched pairs (a quarter of
    # the pool) are selected clearly less often than at random (1920 selections in all)
    assert abs(summary["noisy_in_pool"] - 0.25) < 0.02
    assert summary["noisy_selected"] < 0.8 * summary["noisy_in_pool"]
    assert "noisy pairs:" in proc.stdout
