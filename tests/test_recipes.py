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


def test_dreamface_guides_with_the_prompt_as_given():
    """The paper describes no view phrase: every DreamFace guidance sees the prompt unchanged."""
    from headgen.prior.prompts import view_texts

    cfg = validate(compose(REPO / "methods/dreamface.yaml", []))
    guided = {name: stage.config.guidance.config for name, stage in cfg.stages.items()
              if getattr(stage.config, "guidance", None) is not None}
    assert set(guided) == {"carve", "texture-latent", "texture-image"}
    for name, guidance in guided.items():
        assert view_texts(guidance.prompt, cfg.prompt, ["front", "side", "back"]) == [cfg.prompt] * 3, name
