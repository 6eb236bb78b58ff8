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
# at 256 (32x32 latents): chosen when the demo autoencoder decoded 8x8-block averages, and kept
# under the smooth one (issue 16), so the README's reduced-run figures stay comparable.
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
    "stages.refine.guidance.target.sample_steps=10", "stages.refine.optimizer.groups.color=1.0e-2",
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
    assert "image_key: normal_opacity" in cfg and "latent_size: 16" in cfg and "type: ssd-refine" in cfg


def test_geometry_stages_lower_geometry_error(run_dir):
    m = run_metrics(run_dir)
    # Both geometry stages move the template-shaped DMTet toward the target's identity.
    # Measured: init 0.02178 -> geometry-latent 0.02143 -> geometry 0.02027 (grid 32, 5 + 60 steps, seed 0,
    # camera-ambiguous demo prior; exact-view prior: 0.02201 -> 0.02176 -> 0.01973, seeds 1, 2: 0.02005, 0.02006).
    assert m["geometry-latent/geometry_error"] < m["init/geometry_error"], m
    assert m["geometry/geometry_error"] < m["init/geometry_error"] - 1e-3, m
    assert m["geometry/silhouette_iou"] > 0.9, m


def test_texture_stages_raise_psnr(run_dir):
    m = run_metrics(run_dir)
    start = m["geometry/psnr"]  # the untrained colour field on the final geometry
    # Measured (seed 0), unlit texture on the authors' background, view text on SSD's CFG-w branch,
    # refine = SSD + 1e5 x l2 to a fixed-seed noise sample: start 17.42 -> texture 20.73 (+3.32) -> refine
    # 23.27 (+5.86 over the start); under the former exact-view prior 17.43 -> 20.76 -> 23.30. Before
    # (lit texture, view-independent text, refine = l2 to an SDEdit
    # sample without SSD): 17.43 -> 20.64 -> 22.86. The texture stage alone stays short of +5 dB under the
    # demo prior: SSD's gradient (w - 1)(eps_c - eps_u) follows the target's difference from the bank, peaks
    # and overshoots; the refine's image loss pulls toward a sample, which the exact prior draws close to
    # the target (with lambda_refine 100 SSD wins and refine falls to 18.52 dB, see the recipe).
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

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.calls["vae_decode"] += 1
        return latents[:, :3].repeat_interleave(8, -1).repeat_interleave(8, -2).permute(0, 2, 3, 1)

    def eps(self, z_t, t, branches, views=None):
        self.branches.append(len(branches))
        self.seen.append((tuple(z_t.shape), branches))
        return [torch.zeros_like(z_t) for _ in branches]


def _guidance(stage: str, backbone: DiffusionBackbone, **options):
    node = compose(RECIPE, [f"stages.{stage}.guidance.resolution=64"])["stages"][stage]["guidance"]
    cls = lookup("guidance", node["type"])
    node = {k: v for k, v in node.items() if k != "type"}
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
    guidance(_input("albedo", edit="with dark skin"), torch.Generator().manual_seed(0))
    cond, uncond, reference = bb.seen[0][1]
    assert cond.texts == ["a bald man, with dark skin, front view", "a bald man, with dark skin, back view"]
    assert (cond.subject, cond.edit) == ("a bald man", "with dark skin")  # what the demo prior reads
    assert uncond.subject is None and uncond.texts == ["cartoon"] * 2
    assert reference.texts == ["a bald man, with dark skin"] * 2 and reference.edit == "with dark skin"
    plain = _CountingBackbone()
    _guidance("texture", plain, edit_prompt="")(_input("albedo", edit="old"),
                                                torch.Generator().manual_seed(0))
    assert plain.seen[0][1][2].texts == ["a bald man"] * 2 and plain.seen[0][1][0].edit is None
    with pytest.raises(ConfigError, match="edit_template must contain {edit}"):
        _guidance("texture", plain, edit_template="{prompt} edited")


@pytest.mark.parametrize("stage", ["geometry", "texture", "refine"])
def test_ssd_branches_view_text_on_cfg_w_plain_on_cfg_1(stage):
    # Paper 5.1 and the authors' code: the CFG-w branch (conditional) has the view-dependent text,
    # the CFG-1 reference the plain prompt: one branch more than SDS with CFG, in the same call.
    counts = {}
    for ablation in ("ssd", "sds"):
        bb = _CountingBackbone()
        guidance = _guidance(stage, bb, ablation=ablation, **({"target": {"sample_steps": 1}}
                                                                if stage == "refine" else {}))
        out = guidance(_input(guidance.cfg.image_key), torch.Generator().manual_seed(0))
        assert torch.isfinite(out["loss_ssd"])
        counts[ablation] = bb.branches[:1]  # the SSD / SDS call (refine then samples its target)
        if ablation == "ssd":
            cond, uncond, reference = bb.seen[0][1]
            assert cond.texts == ["a bald man, front view", "a bald man, back view"]
            assert uncond.texts == ["cartoon"] * 2 and uncond.subject is None
            assert reference.texts == ["a bald man"] * 2 and reference.subject == "a bald man"
    assert counts == {"ssd": [3], "sds": [2]}, counts


def test_texture_t_max_changes_once_at_step_10000():
    # A step change as in the authors' config, not a ramp: 0.98 up to step 9999, 0.7 from 10000 on.
    from guidance.timesteps import sample_timesteps
    from headgen.config.schedule import value_at

    guidance = _guidance("texture", _CountingBackbone())
    t_max = guidance.cfg.timesteps.t_range[1]
    values = {step: value_at(t_max, step) for step in (0, 4999, 5000, 9999, 10000, 19999)}
    assert values == {0: 0.98, 4999: 0.98, 5000: 0.98, 9999: 0.98, 10000: 0.7, 19999: 0.7}, values
    drawn = {step: sample_timesteps(guidance.cfg.timesteps, step, 20000, 4000, 1000,
                                    torch.Generator().manual_seed(0)) for step in (9999, 10000)}
    assert int(drawn[9999].max()) > 950 and int(drawn[10000].max()) == 700


def test_texture_render_is_unlit_albedo_on_the_authors_background():
    # The texture stage guides the unlit colour field over (0.58, 0.47, 0.41), at ControlNet scale 1.
    from headgen.cameras import Lights
    from headgen.config import build
    from headgen.geometry import Mesh, SurfaceGeometry

    stage = compose(RECIPE, [])["stages"]["texture"]
    guidance = _guidance("texture", _CountingBackbone())
    assert guidance.cfg.image_key == "albedo" and guidance.cfg.conditioning_scale == 1.0
    renderer = build("renderer", {**stage["renderer"], "resolution": 64, "backend": "torch"})
    xy = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]) * 0.5
    mesh = Mesh(torch.cat([xy, torch.zeros(4, 1)], 1), torch.tensor([[0, 1, 2], [0, 2, 3]]))
    colour = lambda p: torch.stack([p[:, 0] + 0.5, p[:, 1] + 0.5, torch.full_like(p[:, 0], 0.2)], -1)  # noqa: E731
    surface = SurfaceGeometry(mesh, albedo_fn=colour)
    cams = Cameras.from_spherical(torch.zeros(2), torch.zeros(2), torch.full((2,), 3.0), torch.full((2,), 40.0), 64)
    lights = [Lights(torch.tensor([[0.0, 0.0, 1.0]] * 2), torch.full((2, 3), 0.7), torch.full((2, 3), 0.3)),
              Lights(torch.tensor([[1.0, 0.0, 0.2]] * 2), torch.full((2, 3), 0.4), torch.full((2, 3), 0.1))]
    renders = [renderer.render(surface, cams, light, modes=("albedo", "rgb", "opacity")) for light in lights]
    albedo, cover = renders[0]["albedo"], renders[0]["opacity"][..., 0]
    assert torch.equal(albedo, renders[1]["albedo"])  # no light in it
    assert not torch.allclose(renders[0]["rgb"], renders[1]["rgb"], atol=1e-2)  # the lit option has
    background = torch.tensor([0.58, 0.47, 0.41])
    outside = cover == 0
    assert outside.sum() > 1000 and torch.allclose(albedo[outside], background.expand(int(outside.sum()), 3))
    inside = cover == 1
    assert inside.sum() > 300
    # Where covered, the albedo itself: u = x + 0.5, v = y + 0.5 of the unit square at the pixel.
    xs = torch.linspace(-1, 1, 65)[:-1] + 1 / 64  # NDC of pixel centres
    half = 3.0 * torch.tan(torch.deg2rad(torch.tensor(20.0)))  # half the view height at the plane
    x = (xs * half)[None, :].expand(64, 64)
    y = (-xs * half)[:, None].expand(64, 64)  # row 0 at the top
    expected = torch.stack([x + 0.5, y + 0.5, torch.full_like(x, 0.2)], -1)
    torch.testing.assert_close(albedo[0][inside[0]], expected[inside[0]], atol=2e-3, rtol=0)
