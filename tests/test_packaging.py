"""Packaging: every package folder is installed, under the one ``jestcore`` namespace."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LAYERS = {"jestcore": "jestcore", "backends": "jestcore.backends", "adapters": "jestcore.adapters"}


def test_every_package_folder_is_listed_for_installation() -> None:
    found = set()
    for folder, name in LAYERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *parts)))
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == found


def test_layers_map_into_one_namespace_and_licence_is_apache() -> None:
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {v: k for k, v in LAYERS.items()}
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"torch", "jax", "demo", "docs", "test", "all"} <= set(extras)
    assert any(r.startswith("torch>=2.3") for r in extras["torch"])
    assert "torch==2.13.0" in (ROOT / "constraints-cpu.txt").read_text()
