"""DreamFace runs that are interrupted, resumed, re-exported, and a second prompt that reuses the
CLIP pool cache: the recipe's issue acceptance 4 and 5, on a tiny recipe under the demo prior."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runhelpers import kill_after_first_checkpoint
from testpaths import REPO

from headgen.cli import main

TINY = [
    "prior=demo", "head=builtin", "stages.coarse.representation.num_identity=50",
    "stages.coarse.selector.pool_size=128", "stages.coarse.selector.resolution=64", "stages.coarse.selector.lights=2",
    "stages.carve.steps=3", "stages.carve.renderer.resolution=64", "stages.carve.guidance.resolution=64",
    "stages.hair.selector.resolution=64", "stages.hair.selector.lights=1",
    "stages.texture-latent.steps=3",
    "stages.texture-image.steps=40", "stages.texture-image.checkpoint_every=1",
    "stages.texture-image.renderer.resolution=64", "stages.texture-image.guidance.resolution=64",
    "stages.export.exporters.2.turntable_frames=3", "stages.export.exporters.2.resolution=64",
    "stages.export.exporters.3.frames=3", "stages.export.exporters.3.resolution=64",
]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def launch(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_interrupted_in_texture_image_resumes_reexports_and_a_second_prompt_hits_the_pool_cache(
    tmp_path, capsys, subprocess_env
):
    cache = tmp_path / "pools"
    common = ["--config", "methods/dreamface.yaml", f"stages.coarse.selector.cache_dir={cache}",
              f"stages.hair.selector.cache_dir={tmp_path / 'hair'}", *TINY]
    cmd = [sys.executable, str(REPO / "launch.py"), *common, "--output-dir", str(tmp_path / "a"),
           "prompt=an old man with a grey beard"]
    proc = subprocess.Popen(cmd, env=subprocess_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run, step_at_kill = kill_after_first_checkpoint(
        proc, tmp_path / "a", "dreamface/*/stages/texture-image/last.ckpt", "texture-image", timeout_s=600, settle_s=1.0
    )
    assert 0 < step_at_kill < 40
    assert not (run / "assets").exists() or not any((run / "assets").iterdir())

    code, out, err = launch(["--resume", str(run)], capsys)
    assert code == 0, err[-3000:]
    assert "resuming dreamface at stage 'texture-image'" in out
    s = summary(run)
    assert s["finished"] is True
    done = {st["name"]: st for st in s["stages"]}
    assert done["texture-image"]["steps"] == 40
    for key in ("obj", "glb", "diffuse_map", "preview", "animation"):
        assert (run / s["assets"][key]).is_file(), key

    # --export rewrites the assets from the saved results
    glb = run / s["assets"]["glb"]
    glb.unlink()
    code, out, err = launch(["--export", str(run)], capsys)
    assert code == 0, err[-3000:]
    assert glb.is_file() and glb.stat().st_size > 10_000

    # A second prompt: the pool's embeddings come from the cache the first run wrote.
    second_prompt = "prompt=a young woman with red hair"
    code, out, err = launch([*common, "--output-dir", str(tmp_path / "b"), second_prompt,
                             "stages.texture-image.steps=2"], capsys)
    assert code == 0, err[-3000:]
    second = Path(out.strip().splitlines()[-1].removeprefix("Run directory: "))
    m1, m2 = s["metrics"], summary(second)["metrics"]
    assert m1["coarse/pool_cache"] == "miss" and m2["coarse/pool_cache"] == "hit", (m1, m2)
    assert "reusing cached CLIP pool embeddings" in out + err
    t1 = {st["name"]: st["seconds"] for st in s["stages"]}["coarse"]
    t2 = {st["name"]: st["seconds"] for st in summary(second)["stages"]}["coarse"]
    assert t2 < t1, (t1, t2)
