"""The benchmark scripts run (in --quick mode) and their selections agree with NumPy's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("script", "extra"),
    [
        ("select_matrix.py", []),
        ("select_embeddings.py", ["--frameworks", "numpy", "--no-paper"]),
        ("gpu_select.py", ["--device", "cpu", "--frameworks", "jax", "--no-paper"]),
        ("soak.py", ["--frameworks", "numpy", "torch"]),
        ("torch_overhead.py", []),
        ("jax_select.py", []),
        ("select_softmax.py", ["--frameworks", "numpy", "--recompute-frameworks", "numpy"]),
    ],
)
def test_bench_quick(tmp_path: Path, script: str, extra: list[str]) -> None:
    out = tmp_path / "r.json"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", "--out", str(out), *extra],
        check=True,
        cwd=ROOT,
        timeout=300,
        capture_output=True,
    )
    data = json.loads(out.read_text())
    results = data.get("results") or data["runs"]
    assert results and data["environment"]["cpu_count"]
    assert all(r.get("agree", True) for r in results)
    assert all(r.get("overlap") in (None, 1.0) for r in results)
    assert all(r.get("n_selected", 1) > 0 for r in results)
