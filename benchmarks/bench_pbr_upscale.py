"""Cost of DreamFace's PBR map size: the pbr stage + export replayed on a finished run at several sizes.

For each ``--sizes`` entry, a fresh process runs a recipe made of DreamFace's own ``pbr`` and
``export`` stages (methods/dreamface.yaml, with ``upscale_size`` set; 0 = no upscaling) after a
``load`` stage that reads SOURCE's ``texture-image`` result, and the table reports from its
``summary.json``: seconds and peak resident memory of the pbr and export stages, the size of the
pbr stage's result file and of the written assets.

Usage: ``python benchmarks/bench_pbr_upscale.py SOURCE_RUN [--sizes 0 1024 2048 4096] [key=value ...]``
(extra overrides apply to the replay, e.g. ``stages.pbr.converter.upscale_model=realesrgan_x4plus``).
SOURCE_RUN is any finished DreamFace run (a reduced one is enough: its maps are 512 px either way).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def replay_recipe(source: Path, folder: Path) -> Path:
    """A recipe: load SOURCE's texture-image head, then DreamFace's pbr and export stages as they are."""
    from headgen.config.compose import compose

    recipe = compose(REPO / "methods/dreamface.yaml", [])  # a plain dict
    head = yaml.safe_load((source / "config.yaml").read_text())["head"]  # the load stage wants the source's head
    node = {
        "extends": ["base.yaml", "models.yaml"],
        "name": "dreamface-pbr-bench",
        "prompt": "",
        "source": str(source),
        "head": head,
        "stages": {"source": {"kind": "load", "stage": "texture-image"},
                   "pbr": recipe["stages"]["pbr"], "export": recipe["stages"]["export"]},
    }
    path = folder / "pbr-bench.yaml"
    path.write_text(yaml.safe_dump(node, sort_keys=False))
    return path


def run_one(recipe: Path, out: Path, size: int, overrides: list[str]) -> dict:
    value = "null" if size == 0 else str(size)
    cmd = [sys.executable, str(REPO / "launch.py"), "--config", str(recipe), "--output-dir", str(out), "prior=demo",
           f"stages.pbr.converter.upscale_size={value}", *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"size {size}: the replay failed:\n{done.stderr[-3000:]}")
    run = Path(done.stdout.strip().splitlines()[-1].removeprefix("Run directory: "))
    summary = json.loads((run / "summary.json").read_text())
    stages = {s["name"]: s for s in summary["stages"]}
    assets = sum(p.stat().st_size for p in (run / "assets").rglob("*") if p.is_file())
    result = run / "stages/pbr/result.safetensors"
    return {
        "size": size or summary["metrics"]["pbr/upscale_size"],
        "method": summary["metrics"]["pbr/upscale"],
        "pbr_s": stages["pbr"]["seconds"], "pbr_peak_mb": stages["pbr"].get("peak_rss_mb"),
        "export_s": stages["export"]["seconds"], "export_peak_mb": stages["export"].get("peak_rss_mb"),
        "result_mb": round(result.stat().st_size / 2**20, 1), "assets_mb": round(assets / 2**20, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="a finished DreamFace run directory")
    p.add_argument("--sizes", type=int, nargs="+", default=[0, 1024, 2048, 4096], help="upscale_size values (0: none)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the replay recipe")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        recipe = replay_recipe(args.source.resolve(), Path(tmp))
        rows = [run_one(recipe, Path(tmp) / f"run-{size}", size, args.overrides) for size in args.sizes]
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))


if __name__ == "__main__":
    main()
