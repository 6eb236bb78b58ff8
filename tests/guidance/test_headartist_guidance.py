"""HeadArtist's recipes' guidance on the tiny random SD + landmark ControlNet: back views go through the
ControlNet with the contour-only landmark map, SSD's CFG-w branch gets view-dependent text and its
CFG-1 reference the plain prompt (paper 5.1 and the authors' code)."""

from __future__ import annotations

import pytest
import torch

from guidance.base import GuidanceInput
from guidance.controlnet_sds import back_views
from headgen.cameras import Cameras
from headgen.config import build, parse
from headgen.config.compose import compose
from headgen.registry import lookup
from headgen.render.landmarks import LANDMARK_STYLE, render_landmark_map

PROMPT = "a face"
NEG = "blurry"

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

HEADARTIST = {
    "geometry": ("methods/headartist.yaml", "geometry", []),
    "texture": ("methods/headartist.yaml", "texture", []),
    "edit-geometry": ("methods/headartist-edit.yaml", "geometry", ["source=/unused"]),
    "edit-texture": ("methods/headartist-edit.yaml", "texture", ["source=/unused"]),
    "refine": ("methods/headartist.yaml", "refine", []),
}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def recipe_guidance(which: str, backbone, **options):
    """The recipe stage's own guidance config with the tiny models; (guidance, stage node)."""
    recipe, stage_name, overrides = HEADARTIST[which]
    stage = compose(recipe, overrides)["stages"][stage_name]
    node = {k: v for k, v in stage["guidance"].items() if k != "type"}
    cls = lookup("guidance", stage["guidance"]["type"])
    node.update(model="tiny", controlnet="tiny_cn", resolution=64, negative_prompt=NEG,
                prompt={**node["prompt"], "cache_dir": None}, **options)
    return cls(parse(cls.Config, node), None, backbone=backbone), stage


@pytest.mark.parametrize("which", list(HEADARTIST))
def test_headartist_back_views_use_the_controlnet_with_the_contour_map(which, tiny_backbone):
    bb = tiny_backbone
    guidance, stage = recipe_guidance(which, bb, **({"target": {"sample_steps": 2}} if which == "refine" else {}))
    assert stage["inputs"]["landmark_map"]["back_view"] == "oval"
    az = torch.tensor([0.0, 60.0, 120.0, 170.0])
    cams = Cameras.from_spherical(torch.full((4,), 10.0), az, torch.full((4,), 3.0), torch.full((4,), 40.0), 64)
    labels = ["front", "side", "side", "back"]
    head = build("head", {"type": "builtin"}).load()
    lm = render_landmark_map(head.landmarks_mediapipe(), cams, back_view="oval")
    # |azimuth| > 90: only the face oval is drawn (one colour), and it is drawn.
    oval = torch.tensor(LANDMARK_STYLE["face_oval"]) / 255.0
    for i in (2, 3):
        drawn = lm[i][lm[i].amax(-1) > 0]
        assert len(drawn) > 20 and torch.allclose(drawn, oval.expand_as(drawn), atol=1e-6), i
    front_colours = {tuple(c) for c in (lm[0][lm[0].amax(-1) > 0] * 255).round().int().tolist()}
    assert len(front_colours) > 2  # the front map has eyes, brows and lips too
    assert back_views(GuidanceInput({}, cams, labels, PROMPT, 0), 4, guidance.cfg.back_threshold).tolist() == [
        False, False, True, True]

    conds: list[torch.Tensor] = []
    bb.controlnets["landmarks"].register_forward_pre_hook(
        lambda _m, _args, kwargs: conds.append(kwargs["controlnet_cond"].detach()), with_kwargs=True)
    seen = []
    eps_fn = bb.eps
    bb.eps = lambda z_t, t, branches, views=None: seen.append((z_t, t, branches, eps_fn(z_t, t, branches, views))) \
        or seen[-1][-1]
    key = guidance.cfg.image_key
    inp = GuidanceInput({key: torch.rand(4, 64, 64, 3, generator=gen(1))}, cams, labels, PROMPT, 0,
                        negative_prompt=NEG, inputs={"landmark_map": lm})
    out = guidance(inp, gen(3))
    assert torch.isfinite(out["loss_ssd"]) and out["grad_norm"] > 0
    z_t, t, branches, eps = seen[0]
    samples = 0
    if which == "refine":  # then the target's sampling steps, every view through the ControlNet too
        samples = guidance.cfg.target.sample_steps
        assert [len(c) for c in conds[1:]] == [8] * samples
        for c in conds[1:]:
            torch.testing.assert_close(c[3].permute(1, 2, 0), lm[3])
        del conds[1:]
    assert bb.calls["unet"] == 1 + samples and bb.calls["controlnet:landmarks"] == 1 + samples
    # Every row of every branch goes through the ControlNet (3 branches x 4 views), the back views
    # with their contour-only map.
    assert len(branches) == 3 and len(conds) == 1 and conds[0].shape[0] == 12
    for b in range(3):
        assert branches[b].controls[0].active is None
        for i in range(4):
            torch.testing.assert_close(conds[0][4 * b + i].permute(1, 2, 0), lm[i])
    # The back views' conditional eps is not the plain UNet's (it would be with the ControlNet skipped).
    cond = branches[0]
    with torch.no_grad():
        emb = bb.text(cond.texts)
        plain = bb.unet(z_t, t, encoder_hidden_states=emb).sample
    assert not torch.allclose(eps[0][2:], plain[2:], atol=1e-3)
    # Paper 5.1: view text on the CFG-w branch (conditional; the negative prompt unconditional),
    # the plain prompt on the CFG-1 reference.
    assert cond.texts == [f"{PROMPT}, front view", f"{PROMPT}, side view", f"{PROMPT}, side view",
                          f"{PROMPT}, back view"]
    assert branches[1].texts == [NEG] * 4 and branches[1].subject is None
    assert branches[2].texts == [PROMPT] * 4 and branches[2].subject == PROMPT


def test_ssd_cost_with_view_text_is_one_branch_more(tiny_backbone):
    """The price of (b): 3 branches in the one batched UNet call instead of 2, no extra call."""
    bb = tiny_backbone
    guidance, _ = recipe_guidance("texture", bb)
    rows: list[int] = []
    bb.unet.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    cams = Cameras.from_spherical(torch.zeros(2), torch.tensor([0.0, 150.0]), torch.full((2,), 3.0),
                                  torch.full((2,), 40.0), 64)
    inp = GuidanceInput({guidance.cfg.image_key: torch.rand(2, 64, 64, 3)}, cams, ["front", "back"], PROMPT, 0,
                        negative_prompt=NEG, inputs={"landmark_map": torch.rand(2, 64, 64, 3)})
    guidance(inp, gen(0))
    plain, _ = recipe_guidance("texture", bb)
    plain.cfg.prompt.view_dependent = False
    plain(inp, gen(0))
    assert rows == [6, 4] and bb.calls["unet"] == 2 and bb.calls["controlnet:landmarks"] == 2


def test_ssd_refine_is_ssd_plus_l2_to_a_fixed_seed_noise_sample(tiny_backbone):
    """The refine stage's guidance on the tiny models: loss_ssd is the SSD guidance's (same draws),
    loss_refine the l2 from the render to the decoded DPM-Solver sample from the seed's noise with
    SSD's [conditional, negative] branches, and the target does not depend on the stage's draws."""
    from guidance.sampling import dpm_solver_scheduler, noise_sample
    from guidance.ssd import SSDGuidance
    from headgen.config.typed import to_plain
    from headgen.prior.backbone import resize_images

    bb = tiny_backbone
    guidance, stage = recipe_guidance("refine", bb, target={"sample_steps": 3, "seed": 7})
    assert stage["losses"] == {"lambda_ssd": 1.0, "lambda_refine": 1.0e5}
    assert guidance.cfg.target.source == "noise" and guidance.cfg.target.sampler == "dpm-solver"
    cams = Cameras.from_spherical(torch.full((2,), 10.0), torch.tensor([0.0, 150.0]), torch.full((2,), 3.0),
                                  torch.full((2,), 40.0), 64)
    render = torch.rand(2, 64, 64, 3, generator=gen(1)).requires_grad_(True)
    inp = GuidanceInput({guidance.cfg.image_key: render}, cams, ["front", "back"], PROMPT, 0,
                        negative_prompt=NEG, inputs={"landmark_map": torch.rand(2, 64, 64, 3, generator=gen(2))})
    seen = []
    eps_fn = bb.eps
    bb.eps = lambda z_t, t, branches, views=None: seen.append((branches, views)) or eps_fn(z_t, t, branches, views)
    bb.calls.clear()
    out = guidance(inp, gen(5))
    assert dict(bb.calls) == {"vae_encode": 1, "unet": 4, "controlnet:landmarks": 4, "vae_decode": 1}
    assert len(seen[0][0]) == 3 and all(len(b) == 2 for b, _ in seen[1:])
    assert all(b is s for b, s in zip(seen[1][0], seen[0][0][:2]))  # the sample uses SSD's own branches

    ssd_node = {k: v for k, v in to_plain(guidance.cfg).items() if k not in ("target", "loss")}
    ssd = SSDGuidance(parse(SSDGuidance.Config, ssd_node), None, backbone=bb)
    torch.testing.assert_close(out["loss_ssd"], ssd(inp, gen(5))["loss_ssd"])

    z = bb.encode(resize_images(render.detach(), 64))
    start = torch.randn(z.shape, generator=gen(7))
    sample = noise_sample(bb, start, seen[0][0][:2], 7.5, 3, dpm_solver_scheduler(bb), seen[0][1])
    expected = (render.detach() - bb.decode(sample)).pow(2).mean()
    torch.testing.assert_close(out["loss_refine"], expected, rtol=1e-5, atol=1e-6)
    assert out["loss_refine"] > 0 and float(out["t_sample"]) == 1.0

    (out["loss_ssd"] + 100.0 * out["loss_refine"]).backward()
    assert render.grad.abs().sum() > 0
    # A fixed seed: other stage draws change SSD's t and noise, not the target.
    other = guidance(inp, gen(6))
    torch.testing.assert_close(other["loss_refine"], out["loss_refine"])
    assert not torch.allclose(other["loss_ssd"], out["loss_ssd"])

    # The former target as an option: an SDEdit sample of the render from t = 0.3.
    sdedit, _ = recipe_guidance("refine", bb, target={"source": "sdedit", "sample_steps": 10,
                                                       "t_range": [0.3, 0.3]})
    bb.calls.clear()
    out = sdedit(inp, gen(5))
    assert bb.calls["unet"] == 1 + 4 and abs(float(out["t_sample"]) - 0.3) < 1e-6  # DDIM 300, 200, 100, 0
    assert torch.isfinite(out["loss_refine"]) and out["loss_refine"] > 0
