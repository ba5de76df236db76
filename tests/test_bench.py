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


def test_demo_evidence_quick(tmp_path: Path) -> None:
    """Both experiments run (tiny), one record per variant and method, the plots are drawn."""
    out = tmp_path / "evidence.json"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "demo_evidence.py"), "--quick", "--out", str(out)],
        check=True,
        cwd=ROOT,
        timeout=300,
        capture_output=True,
    )
    data = json.loads(out.read_text())
    rows = data["results"]
    methods = ["uniform", "independent", "jest", "flexi_jest"]
    variants = [(r["experiment"], r["variant"]) for r in rows[:: len(methods)]]
    assert variants == [
        ("filter_ratio", "f=0.5"),
        ("filter_ratio", "f=0.8"),
        ("filter_ratio", "f=0.9"),
        ("recipe", "recipe"),
        ("recipe", "previous"),
    ]
    assert [r["method"] for r in rows] == methods * len(variants)
    # The recipe variant is the f = 0.8 run, trained once.
    assert [r["final_accuracy"] for r in rows[4:8]] == [r["final_accuracy"] for r in rows[12:16]]
    assert set(data["recipe_runs"]) == {"recipe", "previous"}
    previous = [r for r in rows if r["variant"] == "previous"]
    assert {r["gain"] for r in previous} == {1.0}
    assert {r["method"]: r["adam_beta2"] for r in previous}["jest"] == 0.999
    assert {r["method"]: r["adam_beta2"] for r in rows[12:16]}["jest"] == 0.95
    for r in rows:
        assert len(r["steps_speedup_per_seed"]) == data["config"]["seeds"] == 1
        assert 0.0 <= r["final_accuracy"] <= 1.0
    for name in ("filter_ratio", "recipe"):
        assert (tmp_path / f"evidence_{name}.png").stat().st_size > 0


def test_demo_backend_trains_with_beta2_0999(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's previous-defaults backend passes adam_beta2 = 0.999 to the torch trainer."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import _demo_backend
    from jestcore.adapters.demo import torch_backend

    seen: dict[str, object] = {}

    class Stop(Exception):
        pass

    def spy(*args: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(torch_backend, "train", spy)
    from jestcore.adapters.demo import DemoConfig
    from jestcore.adapters.demo.digits import make_digits

    config = DemoConfig.quick(image_hidden=8)
    data = make_digits(config.data)
    with pytest.raises(Stop):
        _demo_backend.train_learner(data, None, "uniform", config, 0)
    assert seen["adam_beta2"] == 0.999
    assert torch_backend.train is spy  # restored after the call
