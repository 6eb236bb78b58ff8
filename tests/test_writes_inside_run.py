"""Exporters write only under the run's assets/ folder: a filename that leaves it is rejected when the
recipe is validated (before any stage runs), also when --export reads a config.yaml someone edited."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from headgen.cli import main

OBJ_ONLY = "stages.export.exporters=[{type: obj, filename: head.obj}]"


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("exporter, filename", [("obj", "../../escaped.obj"), ("glb", "/tmp/escaped-headgen.glb"),
                                                ("animation", "sub/../../escaped.mp4"), ("obj", "~/escaped.obj")])
def test_exporter_filename_outside_assets_is_rejected_before_running(tmp_path, capsys, exporter, filename):
    code, out, err = run_cli(["--config", "methods/builtin-head.yaml", "--output-dir", str(tmp_path / "out"),
                              f"stages.export.exporters=[{{type: {exporter}, filename: '{filename}'}}]"], capsys)
    assert code == 2, err
    assert f"exporter {exporter}: filename: '{filename}' must be a file name inside assets/" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()  # nothing ran, nothing was written
    assert not Path("/tmp/escaped-headgen.glb").exists() and not (tmp_path / "escaped.obj").exists()


def test_export_of_an_edited_config_cannot_write_outside(tmp_path, capsys):
    code, out, err = run_cli(["--config", "methods/builtin-head.yaml", "--output-dir", str(tmp_path / "out"),
                              OBJ_ONLY], capsys)
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1].removeprefix("Run directory: "))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["stages"]["export"]["exporters"][0]["filename"] = "../../../stolen.obj"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, _, err = run_cli(["--export", str(run)], capsys)
    assert code == 2 and "must be a file name inside assets/" in err and "Traceback" not in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_plugin_exporter_writing_outside_assets_is_an_error(tmp_path, capsys, toy_plugin):
    from testpaths import TOY_RECIPE

    code, _, err = run_cli(["--plugin", "toy_parts", "--config", str(TOY_RECIPE), "--output-dir", str(tmp_path / "o"),
                            "stages.fit.steps=2", "stages.polish.steps=1",
                            "stages.export.exporters=[{type: toy-png, filename: ../escaped.png}]"], capsys)
    assert code == 2 and "exporter toy-png wrote" in err and "outside the run's assets/ folder" in err


def test_every_cache_honours_headgen_cache_dir(tmp_path, monkeypatch):
    """Heads, hair, CLIP pools and text embeddings are all cached under $HEADGEN_CACHE_DIR (the CLIP
    pool and text-embedding caches used a fixed ~/.cache/headgen path before)."""
    from headgen.cache import resolve_cache_dir
    from headgen.hair.procedural import cache_root as hair_cache
    from headgen.heads.builtin import cache_dir as heads_cache
    from headgen.prior.prompts import PromptConfig
    from selection.clip_select import ClipSelectConfig

    monkeypatch.setenv("HEADGEN_CACHE_DIR", str(tmp_path / "cache"))
    folders = {
        "heads": heads_cache(),
        "hair": hair_cache(),
        "clip-pools": resolve_cache_dir(ClipSelectConfig().cache_dir),
        "text-embeddings": resolve_cache_dir(PromptConfig().cache_dir),
    }
    assert folders == {name: tmp_path / "cache" / name for name in folders}
    monkeypatch.delenv("HEADGEN_CACHE_DIR")
    assert resolve_cache_dir(ClipSelectConfig().cache_dir) == Path.home() / ".cache/headgen/clip-pools"
    assert resolve_cache_dir("~/pools") == Path.home() / "pools"
    assert resolve_cache_dir("/tmp/$HEADGEN_CACHE_DIR") == Path("/tmp/$HEADGEN_CACHE_DIR")
