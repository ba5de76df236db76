"""The README's example runs as written, and its commands are the ones CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_python_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "the README must hold a Python example"
    for block in blocks:
        result = subprocess.run(
            [sys.executable, "-W", "error", "-c", block],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    assert "make demo" in README and "make test" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M), ci
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:.*\n(\t.*\n)*\t\$\(BIN\)/jestcore demo", makefile, flags=re.M)


def test_cli_select_demo_prints_real_comparison(tmp_path: Path) -> None:
    from jestcore.adapters.demo.cli import main

    assert main(["select-demo", "--n", "1024", "--seeds", "2", "--out", str(tmp_path)]) == 0
    import json

    summary = json.loads((tmp_path / "synthetic.json").read_text())
    assert set(summary) == {"uniform", "independent", "joint"}
    mean = {m: sum(v["mismatched_kept"]) / 2 for m, v in summary.items()}
    score = {m: sum(v["batch_learnability"]) / 2 for m, v in summary.items()}
    # Learnability selection drops planted mismatched pairs that uniform sampling keeps,
    # and joint selection finds the batch with the highest joint learnability.
    assert mean["independent"] < 0.7 * mean["uniform"]
    assert mean["joint"] < 0.8 * mean["uniform"]
    assert score["joint"] > max(score["uniform"], score["independent"])
