"""HeadArtist end to end on a reduced recipe under the demo prior (scored against its target), the
paper's ablation switches, and SSD's cost (no more diffusion branches than SDS with CFG)."""

from __future__ import annotations

import json
from pathlib import Path

import pygltflib
import pytest
import torch
import trimesh
from runhelpers import launch_demo, run_metrics

from guidance.base import GuidanceInput
from headgen.cameras import Cameras
from headgen.config.compose import compose
from headgen.config.typed import parse
from headgen.errors import ConfigError
from headgen.prior.backbone import DiffusionBackbone
from headgen.registry import lookup

RECIPE = "methods/headartist.yaml"

# Grid 32, 64 px renders guided at 128 px (16x16 latents; the latent stage's [normal, opacity] at 16x16
# too), a small colour hash grid, tens of steps. The texture stage's colour lr is lowered for the
# short run (SSD's pull does not vanish at the target under the exact demo prior: it overshoots
# after a peak, see test_texture_stages_raise_psnr). The refine stage renders at 128 px and samples
# at 256 (32x32 latents): the demo autoencoder's decoded samples are 8x8-block averages.
REDUCED = [
    "stages.init.representation.resolution=32",
    "stages.init.representation.color_encoding.levels=8",
    "stages.init.representation.color_encoding.log2_hashmap_size=14",
    "stages.init.representation.color_encoding.max_resolution=256",
    "stages.init.representation.export_texture_size=128",
    "stages.geometry-latent.steps=5", "stages.geometry-latent.guidance.latent_size=16",
    "stages.geometry.steps=60", "stages.geometry.renderer.resolution=64",
    "stages.geometry.guidance.resolution=128",
    "stages.texture.steps=24", "stages.texture.renderer.resolution=64",
    "stages.texture.guidance.resolution=128", "stages.texture.optimizer.groups.color=6.0e-3",
    "stages.refine.steps=30", "stages.refine.renderer.resolution=128", "stages.refine.guidance.resolution=256",
    "stages.refine.guidance.sample_steps=10", "stages.refine.optimizer.groups.color=1.0e-2",
    "stages.export.exporters.2.resolution=64", "stages.export.exporters.2.turntable_frames=2",
    "stages.export.exporters.2.turntable_resolution=48",
]


def run(out: Path, *overrides: str, recipe: str = RECIPE) -> Path:
    return launch_demo(recipe, out, *REDUCED, *overrides)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return run(tmp_path_factory.mktemp("headartist"))




def test_assets_and_summary(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["prior"] == "demo" and summary["finished"]
    assert [s["name"] for s in summary["stages"]] == ["init", "geometry-latent", "geometry", "texture", "refine",
                                                      "export"]
    assert [s["steps"] for s in summary["stages"][:5]] == [0, 5, 60, 24, 30]
    assert {"obj", "mtl", "diffuse_map", "glb", "preview", "turntable"} <= set(summary["assets"])
    mesh = trimesh.load(run_dir / "assets/head.obj", process=False)
    assert mesh.visual.uv is not None and len(mesh.faces) > 500
    glb = pygltflib.GLTF2().load(str(run_dir / "assets/head.glb"))
    assert not glb.meshes[0].primitives[0].targets  # DMTet: a static GLB
    assert glb.materials[0].pbrMetallicRoughness.baseColorTexture is not None
    cfg = (run_dir / "config.yaml").read_text()
    assert "controlnet_face_sd21" in cfg and "sd21_base" in cfg and "worst quality" in cfg
    assert "image_key: normal_opacity" in cfg and "latent_size: 16" in cfg and "type: sample-refine" in cfg


def test_geometry_stages_lower_geometry_error(run_dir):
    m = run_metrics(run_dir)
    # Both geometry stages move the template-shaped DMTet toward the target's identity.
    # Measured: init 0.02201 -> geometry-latent 0.02176 -> geometry 0.01973 (grid 32, 5 + 60 steps;
    # seeds 1, 2: 0.02005, 0.02006).
    assert m["geometry-latent/geometry_error"] < m["init/geometry_error"], m
    assert m["geometry/geometry_error"] < m["init/geometry_error"] - 1e-3, m
    assert m["geometry/silhouette_iou"] > 0.9, m


def test_texture_stages_raise_psnr(run_dir):
    m = run_metrics(run_dir)
    start = m["geometry/psnr"]  # the untrained colour field on the final geometry
    # Measured (seed 0 / 1 / 2): start 17.41 / 17.64 / 17.85 -> texture 20.66 / 20.69 / 21.35
    # (+3.25 / +3.05 / +3.51) -> refine 23.06 / 23.12 / 23.27 (+5.65 / +5.48 / +5.42 over the start).
    # The texture stage alone stays short of +5 dB under the demo prior: SSD's gradient (w - 1)(eps_c - eps_u)
    # follows the target's difference from the bank, peaks and overshoots; the refine stage's target is a
    # sample of the render, which the exact prior draws close to the target. Geometry caps both: with 15
    # geometry steps (error 0.0213) refine plateaus at ~22.5 dB (30 or 60 steps, 256 or 512 px samples).
    assert m["texture/geometry_error"] == m["geometry/geometry_error"] == m["refine/geometry_error"]
    assert m["texture/psnr"] > start + 2.5, m
    assert m["refine/psnr"] > m["texture/psnr"] + 1.5, m
    assert m["refine/psnr"] > start + 5.0, m


def test_sds_cfg100_ablation_without_negative_prompt_runs(tmp_path):
    d = run(tmp_path, "stages.geometry-latent.steps=0", "stages.geometry.steps=0", "stages.texture.steps=4",
            "stages.refine.steps=0",
            "stages.texture.guidance.ablation=sds", "stages.texture.guidance.cfg=100", 'negative_prompt=""',
            "stages.export.exporters=[{type: obj}]")
    cfg = (d / "config.yaml").read_text()
    assert "ablation: sds" in cfg and "worst quality" not in cfg
    m = run_metrics(d)
    assert m["texture/psnr"] != m["init/psnr"]  # the colour field was trained


# ---------------------------------------------------------------------------------------- guidance
class _CountingBackbone(DiffusionBackbone):
    """Records each eps call's branches and latent shape (a zero-noise stand-in model)."""

    def __init__(self) -> None:
        super().__init__()
        self.num_train_timesteps = 1000
        self.alphas_cumprod = torch.linspace(0.999, 0.01, 1000)
        self.branches: list[int] = []
        self.seen: list[tuple[tuple[int, ...], list]] = []

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.calls["vae_encode"] += 1
        return images.permute(0, 3, 1, 2)[:, :1].repeat(1, 4, 1, 1)[..., ::8, ::8]

    def eps(self, z_t, t, branches, views=None):
        self.branches.append(len(branches))
        self.seen.append((tuple(z_t.shape), branches))
        return [torch.zeros_like(z_t) for _ in branches]


def _guidance(stage: str, backbone: DiffusionBackbone, **options):
    node = compose(RECIPE, [f"stages.{stage}.guidance.resolution=64"])["stages"][stage]["guidance"]
    node = {k: v for k, v in node.items() if k != "type"}
    cls = lookup("guidance", "ssd")
    return cls(parse(cls.Config, {**node, **options}), None, backbone=backbone)


def _input(key: str, channels: int = 3, edit: str | None = None) -> GuidanceInput:
    cams = Cameras.from_spherical(torch.tensor([10.0, 5.0]), torch.tensor([0.0, 150.0]), torch.full((2,), 3.0),
                                  torch.full((2,), 40.0), 64)
    return GuidanceInput({key: torch.rand(2, 64, 64, channels)}, cams, ["front", "back"], "a bald man", 0,
                         negative_prompt="cartoon",
                         inputs={"landmark_map": torch.zeros(2, 64, 64, 3), "edit_text": edit})


def test_geometry_latent_stage_guides_normal_opacity_as_a_64x64_latent():
    bb = _CountingBackbone()
    guidance = _guidance("geometry-latent", bb)
    assert guidance.required_modes == ("normal_opacity",) and guidance.cfg.space == "latent"
    out = guidance(_input("normal_opacity", 4), torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss_ssd"])
    assert bb.seen[0][0] == (2, 4, 64, 64) and bb.calls["vae_encode"] == 0  # resized, no VAE
    later = _CountingBackbone()
    _guidance("geometry", later)(_input("normal"), torch.Generator().manual_seed(0))
    assert later.calls["vae_encode"] == 1  # then the VAE-encoded normal map


def test_edit_prompt_makes_the_conditional_branch_the_edited_head():
    bb = _CountingBackbone()
    guidance = _guidance("texture", bb)
    guidance(_input("rgb", edit="with dark skin"), torch.Generator().manual_seed(0))
    cond, uncond = bb.seen[0][1]
    assert cond.texts == ["a bald man, with dark skin"] * 2
    assert (cond.subject, cond.edit) == ("a bald man", "with dark skin")  # what the demo prior reads
    assert uncond.subject is None and uncond.texts == ["cartoon"] * 2
    plain = _CountingBackbone()
    _guidance("texture", plain, edit_prompt="")(_input("rgb", edit="old"),
                                                torch.Generator().manual_seed(0))
    assert plain.seen[0][1][0].texts == ["a bald man"] * 2 and plain.seen[0][1][0].edit is None
    with pytest.raises(ConfigError, match="edit_template must contain {edit}"):
        _guidance("texture", plain, edit_template="{prompt} edited")


@pytest.mark.parametrize("stage", ["geometry", "texture"])
def test_ssd_costs_what_sds_with_cfg_costs(stage):
    counts = {}
    for ablation in ("ssd", "sds"):
        bb = _CountingBackbone()
        guidance = _guidance(stage, bb, ablation=ablation)
        out = guidance(_input(guidance.cfg.image_key), torch.Generator().manual_seed(0))
        assert torch.isfinite(out["loss_ssd"])
        counts[ablation] = bb.branches
    assert counts["ssd"] == counts["sds"] == [2], counts
