"""Paths shared by tests (importable because tests/conftest.py puts tests/plugins on sys.path)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "tests" / "plugins"
SHARED = REPO.parent / "shared"
TOY_RECIPE = PLUGINS / "toy.yaml"
