"""Registry: registration, lookup errors, plugins from --plugin modules and entry points."""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass

import pytest

from headgen.config import build
from headgen.errors import HeadgenError, RegistryError
from headgen.registry import load_plugins, lookup, register, registered


def test_register_build_and_validate():
    @register("guidance", "unit-test-guidance")
    class G:
        """A guidance used by this test."""

        @dataclass
        class Config:
            scale: float = 1.0

        def __init__(self, cfg):
            self.cfg = cfg

    obj = build("guidance", {"type": "unit-test-guidance", "scale": 3})
    assert isinstance(obj, G) and obj.cfg.scale == 3.0
    assert registered()["guidance"]["unit-test-guidance"] is G
    with pytest.raises(HeadgenError, match=r"guidance\.scale: expected float, got str 'x'"):
        build("guidance", {"type": "unit-test-guidance", "scale": "x"})


def test_duplicate_name_from_another_class_is_rejected():
    @register("renderer", "unit-test-dup")
    class A:
        pass

    with pytest.raises(RegistryError, match="registered twice"):

        @register("renderer", "unit-test-dup")
        class B:  # noqa: F841
            pass


def test_unknown_name_lists_known_names():
    with pytest.raises(RegistryError) as exc:
        lookup("stage", "optimise")
    msg = str(exc.value)
    assert "unknown stage 'optimise' (did you mean 'optimize'?)" in msg
    for name in ("optimize", "select", "convert", "export"):
        assert name in msg


def test_plugin_module_not_found_is_clear():
    with pytest.raises(HeadgenError, match="--plugin no_such_plugin_mod: module not found"):
        load_plugins(["no_such_plugin_mod"])


def test_entry_point_plugin_is_loaded(tmp_path, monkeypatch):
    """A package installed with a `headgen.plugins` entry point registers its parts."""
    (tmp_path / "ep_plugin_mod.py").write_text(
        textwrap.dedent(
            '''
            from dataclasses import dataclass
            from headgen.registry import register

            @register("guidance", "from-entry-point")
            class FromEntryPoint:
                """Registered through an entry point."""
                @dataclass
                class Config:
                    pass
                def __init__(self, cfg, ctx=None):
                    self.cfg = cfg
            '''
        )
    )
    dist = tmp_path / "ep_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[headgen.plugins]\nmine = ep_plugin_mod\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_plugins([])
    assert "ep_plugin_mod" in loaded
    assert lookup("guidance", "from-entry-point").__name__ == "FromEntryPoint"
    sys.modules.pop("ep_plugin_mod", None)
