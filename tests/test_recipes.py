"""Every shipped recipe validates; the stand-in main job runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trimesh
from testpaths import REPO

from headgen.cli import main
from headgen.config.compose import compose
from headgen.config.recipe import validate
from headgen.errors import ConfigError

RECIPES = sorted((REPO / "methods").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_validates(recipe):
    if recipe.stem.endswith("-edit"):
        with pytest.raises(ConfigError, match="pass source=RUN_DIR"):
            validate(compose(recipe, []))
        cfg = validate(compose(recipe, ["source=/some/run", "prompt=x"]))
    else:
        cfg = validate(compose(recipe, []))
    assert cfg.stages and cfg.name


def test_builtin_head_recipe_runs(tmp_path, capsys):
    code = main(["--config", "methods/builtin-head.yaml", "--output-dir", str(tmp_path),
                 "stages.export.exporters.2.turntable_frames=4", "stages.export.exporters.2.resolution=96",
                 "stages.export.exporters.3.frames=4", "stages.export.exporters.3.resolution=64"])
    out, err = capsys.readouterr()
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1].removeprefix("Run directory: "))
    summary = json.loads((run / "summary.json").read_text())
    assert {"obj", "mtl", "diffuse_map", "glb", "preview", "turntable", "animation"} <= set(summary["assets"])
    glb = trimesh.load(run / summary["assets"]["glb"])
    assert len(glb.geometry) == 1
    mesh = trimesh.load(run / summary["assets"]["obj"], process=False)
    assert mesh.visual.uv is not None and len(mesh.faces) > 20_000
    assert summary["metrics"]["selected_beta_norm"] > 0
