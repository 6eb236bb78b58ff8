"""ControlNet SDS, dual-path SDS, IESD and SSD against closed forms on tiny real models, and pass counting."""

from __future__ import annotations

import pytest
import torch

from guidance.base import GuidanceInput
from guidance.controlnet_sds import ControlNetSDSGuidance, back_views
from guidance.distill import DistillConfig
from guidance.dual_path_sds import DualPathSDSGuidance
from guidance.iesd import IESDGuidance
from guidance.sds import SDSGuidance
from guidance.ssd import SSDGuidance
from guidance.timesteps import sample_timesteps, sds_weight
from headgen.cameras import Cameras
from headgen.config import parse
from headgen.config.recipe import ModelSpec
from headgen.errors import HeadgenError
from headgen.models.random_init import build_unet
from headgen.prior.backbone import Branch, PretrainedBackbone

PROMPT = "a face"
NEG = "blurry"
EDIT = "make it old"
BASE = {"model": "tiny", "space": "latent", "image_key": "latent", "negative_prompt": NEG}
VIEW_INDEPENDENT = {"view_dependent": False}


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def make(cls, backbone, **options):
    return cls(parse(cls.Config, {**BASE, **options}), None, backbone=backbone)


def dual(backbone, texture_backbone, **options):
    cfg = parse(DualPathSDSGuidance.Config, {**BASE, **options})
    return DualPathSDSGuidance(cfg, None, backbone=backbone, texture_backbone=texture_backbone)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draws(guidance, z0: torch.Tensor, seed: int, extra: tuple[int, ...] | None = None):
    """The guidance's random draws replayed: t, noise, z_t (and the texture path's noise)."""
    g = gen(seed)
    bb = guidance.backbone
    t = sample_timesteps(guidance.cfg.timesteps, 0, 1, z0.shape[0], bb.num_train_timesteps, g)
    noise = torch.randn(z0.shape, generator=g)
    z_t = bb.add_noise(z0, noise, t)
    more = torch.randn(extra, generator=g) if extra is not None else None
    return t, noise, z_t, more


def manual_eps(bb, z_t, t, texts, controls=()):
    """eps sample by sample, calling the text encoder, ControlNets and UNet directly (no batching).

    ``controls``: (role, image [B,H,W,3], scale, active [B] bools) summed as MultiControlNet does."""
    rows = []
    with torch.no_grad():
        for i in range(z_t.shape[0]):
            emb = bb.text([texts[i]])
            down = mid = None
            for role, image, scale, active in controls:
                if not active[i]:
                    continue
                cond = image[i : i + 1].permute(0, 3, 1, 2)
                d, m = bb.controlnets[role](z_t[i : i + 1], t[i : i + 1], encoder_hidden_states=emb,
                                            controlnet_cond=cond, return_dict=False)
                down = [x * scale for x in d] if down is None else [a + x * scale for a, x in zip(down, d)]
                mid = m * scale if mid is None else mid + m * scale
            out = bb.unet(z_t[i : i + 1], t[i : i + 1], encoder_hidden_states=emb,
                          down_block_additional_residuals=down, mid_block_additional_residual=mid)
            rows.append(out.sample)
    return torch.cat(rows)


def weight(bb, t):
    return sds_weight(bb.alphas_cumprod, t, "sds").view(-1, 1, 1, 1)


def batch_sizes(module) -> list[int]:
    """Record the batch size of every forward call of ``module``."""
    seen: list[int] = []
    module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    return seen


def inputs(z, labels, landmark_map=None, source_render=None, edit=None, **kw) -> GuidanceInput:
    """A latent-space GuidanceInput with the given declared inputs (None: not provided)."""
    provided = {"landmark_map": landmark_map, "source_render": source_render, "edit_text": edit}
    return GuidanceInput(render={"latent": z}, cameras=None, view_labels=labels, prompt=PROMPT, step=0,
                         negative_prompt="ignored", inputs={k: v for k, v in provided.items() if v is not None}, **kw)


# ---------------------------------------------------------------- controlnet-sds


def test_controlnet_sds_back_view_skips_controlnet_and_matches_closed_form(tiny_backbone):
    bb = tiny_backbone
    guidance = make(ControlNetSDSGuidance, bb, cfg=7.5, conditioning_scale=0.8)
    labels = ["front", "back", "side"]
    z = torch.randn(3, 8, 8, 4, requires_grad=True)
    lm = torch.rand(3, 64, 64, 3)
    net_batches = batch_sizes(bb.controlnets["landmarks"])
    captured = []
    eps_fn = bb.eps
    bb.eps = lambda *a, **k: captured.append(eps_fn(*a, **k)) or captured[-1]
    bb.calls.clear()
    out = guidance(inputs(z, labels, landmark_map=lm), gen(3))
    assert bb.calls["unet"] == 1 and bb.calls["controlnet:landmarks"] == 1
    assert net_batches == [4]  # front + side of both CFG branches: never the back view
    guidance(inputs(z, labels, landmark_map=lm), gen(4))
    assert bb.calls["unet"] == 2 and bb.calls["controlnet:landmarks"] == 2
    out["loss_sds"].backward()

    t, noise, z_t, _ = draws(guidance, z.detach().permute(0, 3, 1, 2), 3)
    texts = [f"{PROMPT}, {v} view" for v in labels]
    control = [("landmarks", lm, 0.8, [True, False, True])]
    plain = manual_eps(bb, z_t, t, texts)
    eps_c = captured[0][0]
    assert torch.allclose(eps_c[1], plain[1], atol=1e-5)  # the back sample is a plain UNet pass
    assert not torch.allclose(eps_c[0], plain[0], atol=1e-3)  # the front one is not
    eps_c = manual_eps(bb, z_t, t, texts, control)
    eps_u = manual_eps(bb, z_t, t, [NEG] * 3, control)
    expected = weight(bb, t) * (eps_u + 7.5 * (eps_c - eps_u) - noise) / 3
    assert torch.allclose(z.grad.permute(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-5)


HEADSCULPT = {"coarse": ("methods/headsculpt.yaml", "coarse"), "fine": ("methods/headsculpt.yaml", "fine"),
              "edit": ("methods/headsculpt-edit.yaml", "edit")}


@pytest.mark.parametrize("which", list(HEADSCULPT))
def test_headsculpt_recipe_back_views_use_the_plain_unet(which, tiny_models, tiny_ip2p_dir, tmp_path):
    """The recipes' own guidance, cameras' view labels and landmark rule on tiny models: back views get an
    empty landmark map, skip the landmark ControlNet and are guided by the plain UNet with the back-view
    template and its learned token; the other views go through the ControlNet."""
    from safetensors.torch import save_file

    from headgen.camera_sampling import view_labels
    from headgen.config import build
    from headgen.config.compose import compose
    from headgen.prior.load import load_pretrained
    from headgen.prior.prompts import PromptConfig
    from headgen.registry import lookup
    from headgen.render.landmarks import render_landmark_map

    recipe, stage_name = HEADSCULPT[which]
    stage = compose(recipe, ["source=/unused"] if which == "edit" else [])["stages"][stage_name]
    node = {k: v for k, v in stage["guidance"].items() if k != "type"}
    cls = lookup("guidance", stage["guidance"]["type"])
    back_view = stage["inputs"]["landmark_map"]["back_view"]
    assert cls in (ControlNetSDSGuidance, IESDGuidance) and back_view == "none"
    token_file = tmp_path / "back-view.safetensors"
    save_file({"<back-view>": torch.randn(1, 16, generator=gen(0))}, str(token_file))
    prompt = parse(PromptConfig, {**node["prompt"], "token_file": str(token_file), "cache_dir": None})
    models = {**tiny_models, "tiny_ip2p": ModelSpec(hub_id="example/tiny-ip2p", local_dir=str(tiny_ip2p_dir),
                                                    kind="controlnet")}
    roles = {"landmarks": "tiny_cn", **({"ip2p": "tiny_ip2p"} if cls is IESDGuidance else {})}
    bb = load_pretrained(models, "tiny", roles, prompt, "cpu")
    overrides = {"model": "tiny", "controlnet": "tiny_cn", "ip2p_controlnet": "tiny_ip2p", "resolution": 64,
                 "negative_prompt": NEG, "prompt": {**node["prompt"], "token_file": str(token_file)}}
    guidance = cls(parse(cls.Config, {**node, **{k: v for k, v in overrides.items() if k in
                                                 cls.Config.__dataclass_fields__}}), None, backbone=bb)

    az = torch.tensor([0.0, 60.0, 120.0, 170.0])
    cams = Cameras.from_spherical(torch.full((4,), 10.0), az, torch.full((4,), 3.0), torch.full((4,), 40.0), 64)
    cam_cfg = stage["cameras"]
    labels = view_labels(cams, front_threshold=cam_cfg["front_threshold"], back_threshold=cam_cfg["back_threshold"])
    assert labels == ["front", "side", "side", "back"]
    head = build("head", {"type": "builtin"}).load()
    lm = render_landmark_map(head.landmarks_mediapipe(), cams, back_view=back_view)
    drawn = lm.flatten(1).amax(1) > 0
    assert drawn.tolist() == [True, True, False, False]  # |azimuth| > 90: HeadSculpt's empty map
    assert back_views(GuidanceInput({}, cams, labels, PROMPT, 0), 4, guidance.cfg.back_threshold).tolist() == [
        False, False, True, True]

    net_batches = batch_sizes(bb.controlnets["landmarks"])
    seen = []
    eps_fn = bb.eps
    bb.eps = lambda z_t, t, branches, views=None: seen.append((z_t, t, branches, eps_fn(z_t, t, branches, views))) \
        or seen[-1][-1]
    provided = {"landmark_map": lm}
    if cls is IESDGuidance:
        provided.update(edit_text=EDIT, source_render=torch.rand(4, 64, 64, 3, generator=gen(2)))
    inp = GuidanceInput({"rgb": torch.rand(4, 64, 64, 3, generator=gen(1))}, cams, labels, PROMPT, 0,
                        negative_prompt=NEG, inputs=provided)
    out = guidance(inp, gen(3))
    assert torch.isfinite(next(v for k, v in out.items() if k.startswith("loss_")))
    branches = len(seen[0][2])
    assert bb.calls["unet"] == 1 and bb.calls["controlnet:landmarks"] == 1
    assert net_batches == [2 * branches]  # the front and side samples of every branch, never a back view
    z_t, t, branch_list, eps = seen[0]
    cond = branch_list[0]
    back_text = f"{PROMPT}, back view of head, <back-view>, without eyes, without faces"
    assert cond.texts == [f"{PROMPT}, front view of head", f"{PROMPT}, side view of head",
                          f"{PROMPT}, side view of head", back_text]
    assert cond.controls[0].active.tolist() == [True, True, False, False]
    plain = manual_eps(bb, z_t, t, cond.texts)
    torch.testing.assert_close(eps[0][2:], plain[2:], rtol=1e-4, atol=1e-5)  # plain UNet for |azimuth| > 90
    assert not torch.allclose(eps[0][:2], plain[:2], atol=1e-3)  # ControlNet for the others
    # The back view's text holds the learned token (one id, the saved vector), not the characters of "<back-view>".
    tok, encoder = bb.text.tokenizer, bb.text.text_encoder
    token_id = tok.convert_tokens_to_ids("<back-view>")
    assert token_id in tok(back_text).input_ids
    torch.testing.assert_close(encoder.get_input_embeddings().weight[token_id].detach(),
                               torch.randn(1, 16, generator=gen(0))[0])


def test_back_views_from_labels_and_azimuth():
    cams = Cameras.from_spherical(torch.zeros(3), torch.tensor([0.0, 150.0, 60.0]), torch.full((3,), 3.0),
                                  torch.full((3,), 40.0), 8)
    inp = GuidanceInput(render={}, cameras=cams, view_labels=["front", "side", "back"], prompt=PROMPT, step=0)
    assert back_views(inp, 3, 90.0).tolist() == [False, True, True]
    assert back_views(inp, 3, None).tolist() == [False, False, True]
    with pytest.raises(HeadgenError, match="view labels"):
        back_views(inp, 2, 90.0)


def test_controlnet_sds_needs_landmark_maps(tiny_backbone):
    guidance = make(ControlNetSDSGuidance, tiny_backbone)
    message = "controlnet-sds needs the input 'landmark_map', but the stage provided none"
    with pytest.raises(HeadgenError, match=message):
        guidance(inputs(torch.randn(1, 8, 8, 4), ["front"]), gen(0))
    assert tiny_backbone.calls["unet"] == 0


# ---------------------------------------------------------------- dual-path-sds


@pytest.fixture
def texture_backbone(tiny_backbone, tiny_sd_dir):
    """A texture model whose UNet takes 4 + 1 input channels (latent + mask)."""
    from diffusers import DDPMScheduler

    with torch.random.fork_rng():
        torch.manual_seed(2)
        unet = build_unet("tiny", in_channels=5)
    scheduler = DDPMScheduler.from_pretrained(tiny_sd_dir / "scheduler")
    return PretrainedBackbone(unet, tiny_backbone.vae, tiny_backbone.text, scheduler)


def test_dual_path_without_texture_path_equals_sds(tiny_backbone, texture_backbone):
    z0 = torch.randn(2, 8, 8, 4)
    z_ref = z0.clone().requires_grad_()
    sds = SDSGuidance(parse(DistillConfig, {**BASE, "cfg": 7.5}), None, backbone=tiny_backbone)
    ref = sds(inputs(z_ref, ["front", "side"]), gen(5))
    ref["loss_sds"].backward()
    for options in ({"texture_path": False}, {"lambda_tau": 0.0}):
        guidance = dual(tiny_backbone, texture_backbone, cfg=7.5, **options)
        z = z0.clone().requires_grad_()
        tex = torch.randn(1, 4, 8, 8, requires_grad=True)
        out = guidance(inputs(z, ["front", "side"], extra={"texture_latent": tex}), gen(5))
        out["loss_sds"].backward()
        assert torch.equal(out["loss_sds"], ref["loss_sds"]), options
        assert torch.equal(z.grad, z_ref.grad) and torch.equal(out["t"], ref["t"])
        assert torch.equal(out["grad_norm"], ref["grad_norm"])
        assert tex.grad is None or not tex.grad.any()


def test_dual_path_texture_path_matches_closed_form(tiny_backbone, texture_backbone):
    options = {"cfg": 7.5, "texture_cfg": 3.0, "lambda_g": 0.5, "lambda_tau": 2.0}
    guidance = dual(tiny_backbone, texture_backbone, **options)
    z = torch.randn(2, 8, 8, 4, requires_grad=True)
    tex = torch.randn(4, 8, 8, requires_grad=True)  # [4,h,w] is accepted as one latent
    inputs_seen: list[torch.Tensor] = []
    texture_backbone.unet.register_forward_pre_hook(lambda _m, args: inputs_seen.append(args[0].detach()))
    out = guidance(inputs(z, ["front", "side"], extra={"texture_latent": tex}), gen(7))
    out["loss_sds"].backward()
    assert texture_backbone.calls["unet"] == 1 and tiny_backbone.calls["unet"] == 1
    assert inputs_seen[0].shape == (2, 5, 8, 8) and torch.equal(inputs_seen[0][:, 4], torch.ones(2, 8, 8))
    assert [k for k in out if k.startswith("loss_")] == ["loss_sds"]
    expected_loss = 0.5 * out["sds_generic"] + 2.0 * out["sds_texture"]
    assert torch.allclose(out["loss_sds"].detach(), expected_loss)

    t, noise, z_t, noise_tau = draws(guidance, z.detach().permute(0, 3, 1, 2), 7, extra=(1, 4, 8, 8))
    eps_c, eps_u = manual_eps(tiny_backbone, z_t.repeat(2, 1, 1, 1), t.repeat(2),
                              [f"{PROMPT}, front view", f"{PROMPT}, side view", NEG, NEG]).chunk(2)
    expected = 0.5 * weight(tiny_backbone, t) * (eps_u + 7.5 * (eps_c - eps_u) - noise) / 2
    assert torch.allclose(z.grad.permute(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-5)

    t_tau = t[:1]  # both paths share t: the texture path uses the first sample's
    tex_t = texture_backbone.add_noise(tex.detach()[None], noise_tau, t_tau)
    x_in = torch.cat([tex_t, torch.ones(1, 1, 8, 8)], 1).repeat(2, 1, 1, 1)
    emb = tiny_backbone.text([PROMPT + ", <dreamface-texture>", NEG])
    with torch.no_grad():
        eps_c, eps_u = texture_backbone.unet(x_in, t_tau.repeat(2), encoder_hidden_states=emb).sample.chunk(2)
    expected_tau = 2.0 * weight(texture_backbone, t_tau) * (eps_u + 3.0 * (eps_c - eps_u) - noise_tau)
    assert torch.allclose(tex.grad, expected_tau[0], rtol=1e-4, atol=1e-5)
    assert out["grad_norm_texture"] > 0


def test_dual_path_errors_and_texture_key(tiny_backbone, texture_backbone):
    guidance = dual(tiny_backbone, texture_backbone)
    with pytest.raises(HeadgenError, match="texture_latent"):
        guidance(inputs(torch.randn(1, 8, 8, 4), ["front"]), gen(0))
    with pytest.raises(HeadgenError, match="mask_channel"):
        dual(tiny_backbone, texture_backbone, mask_channel=False)
    # A 4-channel texture model without mask, the latent read from a render output instead of extra.
    z, tex = torch.randn(1, 8, 8, 4), torch.randn(1, 4, 8, 8)
    results = []
    for key in (None, "uv"):
        g = dual(tiny_backbone, tiny_backbone, mask_channel=False, texture_key=key)
        inp = inputs(z, ["front"], extra={"texture_latent": tex})
        if key is not None:
            inp = inputs(z, ["front"])
            inp.render["uv"] = tex.permute(0, 2, 3, 1)
            assert g.required_modes == ("latent", "uv")
        results.append(g(inp, gen(1))["loss_sds"])
    assert torch.equal(results[0], results[1])


# ---------------------------------------------------------------- iesd


def iesd_inputs(z, lm, src, **kw):
    return inputs(z, ["front", "back"], landmark_map=lm, source_render=src, edit=EDIT, **kw)


def test_iesd_one_backbone_call_and_branches(tiny_backbone_ip2p):
    bb = tiny_backbone_ip2p
    guidance = make(IESDGuidance, bb)
    seen: list[list[Branch]] = []
    eps_fn = bb.eps
    bb.eps = lambda z_t, t, branches, views=None: seen.append(branches) or eps_fn(z_t, t, branches, views)
    bb.calls.clear()
    lm, src = torch.rand(2, 64, 64, 3), torch.rand(2, 64, 64, 3)
    out = guidance(iesd_inputs(torch.randn(2, 8, 8, 4), lm, src), gen(0))
    assert dict(bb.calls) == {"unet": 1, "controlnet:landmarks": 1, "controlnet:ip2p": 1}
    assert set(out) == {"loss_iesd", "grad_norm", "t"}
    id_c, id_u, ed_c, ed_u = seen[0]
    assert (id_c.subject, id_c.edit, ed_c.subject, ed_c.edit) == (PROMPT, None, PROMPT, EDIT)
    assert id_u.subject is None and ed_u.subject is None
    assert id_c.texts == [f"{PROMPT}, front view", f"{PROMPT}, back view"] and ed_c.texts == [EDIT, EDIT]
    assert id_u.texts == ed_u.texts == [NEG, NEG]
    assert [c.name for c in id_u.controls] == ["landmarks"]
    assert [c.name for c in ed_u.controls] == ["landmarks", "ip2p"]
    assert ed_c.controls[0].active.tolist() == [True, False] and ed_c.controls[1].active is None


def test_iesd_edit_scale_endpoints(tiny_backbone_ip2p):
    bb = tiny_backbone_ip2p
    z0 = torch.randn(2, 8, 8, 4)
    lm, src = torch.rand(2, 64, 64, 3), torch.rand(2, 64, 64, 3)
    grads = {}
    for scale in (0.0, 1.0):
        z = z0.clone().requires_grad_()
        guidance = make(IESDGuidance, bb, cfg=7.5, edit_cfg=5.0, edit_scale=scale, conditioning_scale=0.7,
                        ip2p_scale=0.9)
        guidance(iesd_inputs(z, lm, src), gen(11))["loss_iesd"].backward()
        grads[scale] = z.grad.permute(0, 3, 1, 2)

    # edit_scale 0: the identity score alone, i.e. controlnet-sds with the same options and draws.
    z = z0.clone().requires_grad_()
    identity = make(ControlNetSDSGuidance, bb, cfg=7.5, conditioning_scale=0.7)
    identity(iesd_inputs(z, lm, src), gen(11))["loss_sds"].backward()
    assert torch.allclose(grads[0.0], z.grad.permute(0, 3, 1, 2), rtol=1e-4, atol=1e-5)

    # edit_scale 1: SDS on the edit score, computed sample by sample.
    t, noise, z_t, _ = draws(guidance, z0.permute(0, 3, 1, 2), 11)
    controls = [("landmarks", lm, 0.7, [True, False]), ("ip2p", src, 0.9, [True, True])]
    eps_c = manual_eps(bb, z_t, t, [EDIT] * 2, controls)
    eps_u = manual_eps(bb, z_t, t, [NEG] * 2, controls)
    expected = weight(bb, t) * (eps_u + 5.0 * (eps_c - eps_u) - noise) / 2
    assert torch.allclose(grads[1.0], expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(grads[0.0], grads[1.0], rtol=1e-3, atol=1e-4)


def test_iesd_errors(tiny_backbone_ip2p):
    guidance = make(IESDGuidance, tiny_backbone_ip2p)
    z, lm = torch.randn(2, 8, 8, 4), torch.rand(2, 64, 64, 3)
    with pytest.raises(HeadgenError, match="iesd needs the input 'source_render'"):
        guidance(iesd_inputs(z, lm, None), gen(0))
    with pytest.raises(HeadgenError, match="iesd needs the input 'landmark_map'"):
        guidance(iesd_inputs(z, None, lm), gen(0))
    with pytest.raises(HeadgenError, match="edit instruction"):
        guidance(inputs(z, ["front", "back"], landmark_map=lm, source_render=lm), gen(0))


# ---------------------------------------------------------------- ssd


@pytest.mark.parametrize("options", [{"prompt": VIEW_INDEPENDENT}, {"view_dependent_reference": True}])
def test_ssd_is_exactly_zero_at_cfg_one(tiny_backbone, options):
    guidance = make(SSDGuidance, tiny_backbone, cfg=1.0, **options)
    z = torch.randn(3, 8, 8, 4, requires_grad=True)
    out = guidance(inputs(z, ["front", "back", "side"], landmark_map=torch.rand(3, 64, 64, 3)), gen(2))
    out["loss_ssd"].backward()
    assert torch.count_nonzero(z.grad) == 0 and out["grad_norm"] == 0
    assert tiny_backbone.calls["unet"] == 1


def test_ssd_costs_what_sds_costs(tiny_backbone):
    bb = tiny_backbone
    unet_batches, net_batches = batch_sizes(bb.unet), batch_sizes(bb.controlnets["landmarks"])
    z, lm = torch.randn(3, 8, 8, 4), torch.rand(3, 64, 64, 3)
    labels = ["front", "back", "side"]
    passes = []
    # SSD with a view-independent prompt; its back views go through the ControlNet (HeadArtist's contour
    # map), so compare with controlnet-sds doing the same.
    for guidance in (make(ControlNetSDSGuidance, bb, back_view_controlnet=True),
                     make(SSDGuidance, bb, prompt=VIEW_INDEPENDENT)):
        bb.calls.clear()
        unet_batches.clear()
        net_batches.clear()
        guidance(inputs(z, labels, landmark_map=lm), gen(0))
        passes.append((dict(bb.calls), list(unet_batches), list(net_batches)))
    assert passes[0] == passes[1] == ({"unet": 1, "controlnet:landmarks": 1}, [6], [6])
    # Without the ControlNet: no ControlNet call and no landmark map needed.
    bb.calls.clear()
    make(SSDGuidance, bb, use_controlnet=False)(inputs(z, labels), gen(0))
    assert dict(bb.calls) == {"unet": 1}


def test_ssd_matches_closed_form(tiny_backbone):
    bb = tiny_backbone
    guidance = make(SSDGuidance, bb, cfg=100.0)  # view-dependent prompt, view-independent reference
    labels = ["front", "back", "side"]
    z = torch.randn(3, 8, 8, 4, requires_grad=True)
    lm = torch.rand(3, 64, 64, 3)
    unet_batches = batch_sizes(bb.unet)
    out = guidance(inputs(z, labels, landmark_map=lm), gen(9))
    out["loss_ssd"].backward()
    assert unet_batches == [9]  # one call: conditional, negative, reference

    t, _, z_t, _ = draws(guidance, z.detach().permute(0, 3, 1, 2), 9)
    control = [("landmarks", lm, 1.0, [True, True, True])]  # the back view too (back_view_controlnet)
    eps_c = manual_eps(bb, z_t, t, [f"{PROMPT}, {v} view" for v in labels], control)
    eps_u = manual_eps(bb, z_t, t, [NEG] * 3, control)
    eps_1 = manual_eps(bb, z_t, t, [PROMPT] * 3, control)
    expected = weight(bb, t) * (eps_u + 100.0 * (eps_c - eps_u) - eps_1) / 3
    assert torch.allclose(z.grad.permute(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-4)


def test_ssd_sds_ablation_equals_controlnet_sds(tiny_backbone):
    z0, lm = torch.randn(2, 8, 8, 4), torch.rand(2, 64, 64, 3)
    grads = []
    for guidance in (make(SSDGuidance, tiny_backbone, ablation="sds", cfg=7.5),
                     make(ControlNetSDSGuidance, tiny_backbone, cfg=7.5, back_view_controlnet=True)):
        z = z0.clone().requires_grad_()
        out = guidance(inputs(z, ["front", "back"], landmark_map=lm), gen(4))
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        grads.append(z.grad)
    assert torch.equal(grads[0], grads[1]) and grads[0].abs().sum() > 0


def test_ssd_is_sds_with_cfg_minus_sds_at_cfg_one(tiny_backbone):
    # SDS_w = SDS_1 + SSD_w on the same draws (view-independent prompt, so eps_1 = eps_c): SSD keeps only
    # the guidance term (w - 1)(eps_c - eps_u) and drops SDS_1's eps_c - noise, the pull toward the data.
    # Under the exact demo prior this is why SSD peaks and overshoots where SDS at CFG 1 converges.
    z0, lm = torch.randn(2, 8, 8, 4), torch.rand(2, 64, 64, 3)
    grads = []
    for cls, options in ((SSDGuidance, {"cfg": 7.5}), (SSDGuidance, {"ablation": "sds", "cfg": 7.5}),
                         (SSDGuidance, {"ablation": "sds", "cfg": 1.0})):
        z = z0.clone().requires_grad_()
        out = make(cls, tiny_backbone, prompt=VIEW_INDEPENDENT, **options)(
            inputs(z, ["front", "back"], landmark_map=lm), gen(5))
        out["loss_ssd"].backward()
        grads.append(z.grad)
    ssd, sds_w, sds_1 = grads
    assert ssd.abs().sum() > 0 and sds_1.abs().sum() > 0
    assert torch.allclose(ssd, sds_w - sds_1, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(ssd, sds_w, rtol=1e-2, atol=1e-3)


def test_edit_text_prefers_the_guidance_option_then_the_run_edit_prompt():
    run = GuidanceInput(render={}, cameras=None, view_labels=["front"], prompt=PROMPT, step=0,
                        inputs={"edit_text": "  make it old "})
    assert run.edit_text(None, "ssd") == "make it old"
    assert run.edit_text("with a hat", "ssd") == "with a hat"
    assert run.edit_text("", "ssd") is None  # "" switches editing off
    plain = GuidanceInput(render={}, cameras=None, view_labels=["front"], prompt=PROMPT, step=0)
    assert plain.edit_text(None, "iesd") is None
    bad = GuidanceInput(render={}, cameras=None, view_labels=["front"], prompt=PROMPT, step=0,
                        inputs={"edit_text": 3})
    with pytest.raises(HeadgenError, match="ssd: the edit prompt must be text, got int"):
        bad.edit_text(None, "ssd")
