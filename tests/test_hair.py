"""DreamFace's hair stage: hair libraries, fitting, CLIP hair selection under the demo prior, hand-over."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import trimesh

from headgen.config import parse
from headgen.errors import HeadgenError
from headgen.hair import PRESET_COLOURS, HairFit, builtin_library, load_library
from headgen.hair.procedural import INNER_OFFSET, STYLES, head_key
from headgen.heads.builtin import load_builtin_head
from headgen.prior import PriorChoice
from headgen.prior.demo.clip import DemoClip
from headgen.prior.demo.targets import HAIR_COLOURS, spec_for
from headgen.prior.demo.world import DemoSettings, DemoWorld
from representations.parametric_mesh import ParametricMesh, ParametricMeshConfig
from selection.hair_select import ClipHair, ClipHairConfig, HairScene

# Small renders keep the selection test fast; the demo CLIP reads a 16 x 16 descriptor anyway.
FAST = {"model": "clip_l14", "resolution": 48, "lights": 1, "batch_size": 6, "colours": ["black", "brown", "blonde",
                                                                                          "grey"]}


@pytest.fixture(scope="module")
def head():
    return load_builtin_head("low")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hair-cache")


@pytest.fixture(scope="module")
def library(head, cache):
    return builtin_library(head, cache)


@pytest.fixture(scope="module")
def world(head):
    # bank_size 1: the relative score (and its anchor over the bank) is off by default
    return DemoWorld(head, "a woman with long blonde hair", settings=DemoSettings(bank_size=1, texture_size=64))


def make_rep(head, beta=None, **cfg):
    node = {"normal_map_size": 0, "texture": "none", "displacement": False, **cfg}
    rep = ParametricMesh(parse(ParametricMeshConfig, node), SimpleNamespace(head=head, device=torch.device("cpu")))
    if beta is not None:
        rep.set_identity(beta[: rep.beta.numel()])
    return rep


def make_ctx(head, world, prompt):
    logs: list[str] = []
    config = SimpleNamespace(prompt=prompt, edit_prompt="", models={}, prior="demo")
    return SimpleNamespace(head=head, device=torch.device("cpu"), config=config, metrics={}, logs=logs,
                           log=logs.append, current_stage="hair", state={"demo_world": world},
                           prior=PriorChoice("demo"))


def selector(cache, **kw):
    return ClipHair(parse(ClipHairConfig, {**FAST, "cache_dir": str(cache), **kw}))


# ---------------------------------------------------------------------------------------- library
def test_builtin_library_is_generated_once_into_the_cache(head, cache, library):
    assert library.names == sorted(STYLES) == ["bob", "bun", "long", "mohawk", "short"]
    assert library.root == cache / head_key(head) and (library.root / "library.json").is_file()
    assert library.get("long").display == "long hair" and "shoulders" in library.get("long").text
    mtimes = {p.name: p.stat().st_mtime_ns for p in library.root.iterdir()}
    again = builtin_library(head, cache)
    assert again.key == library.key and {p.name: p.stat().st_mtime_ns for p in again.root.iterdir()} == mtimes
    tree = torch.cdist(library.get("short").vertices, head.v_template).min(1).values
    for style in library.styles:
        mesh = trimesh.Trimesh(style.vertices.numpy(), style.faces.numpy(), process=False)
        assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0, style.name
    # the crop sits just above the skin (never inside it), and above the nape
    assert float(tree.min()) > 0.5 * INNER_OFFSET and float(library.get("short").vertices[:, 1].min()) > -0.4
    # long hair falls well below the chin (y = -0.5), a bob stops near the jaw line
    assert float(library.get("long").vertices[:, 1].min()) < -0.7 < float(library.get("bob").vertices[:, 1].min())
    assert float(library.get("mohawk").vertices[:, 0].abs().max()) < 0.08  # the sides are shaved
    # another head model gets its own library
    assert head_key(load_builtin_head("default")) != head_key(head)


def test_library_folder_errors(tmp_path):
    with pytest.raises(HeadgenError, match="does not exist; give library: builtin"):
        load_library(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no meshes here")
    with pytest.raises(HeadgenError, match="holds no hairstyle meshes"):
        load_library(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "frizz.ply").write_bytes(b"ply\nformat nonsense\n\x00\x01garbage")
    with pytest.raises(HeadgenError, match=r"cannot read hairstyle mesh .*frizz\.ply"):
        load_library(broken)
    points = tmp_path / "points"
    points.mkdir()
    (points / "dots.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    with pytest.raises(HeadgenError, match=r"dots\.obj has no triangles"):
        load_library(points)
    tet = trimesh.creation.box()
    reserved = tmp_path / "reserved"
    reserved.mkdir()
    tet.export(reserved / "none.obj")
    with pytest.raises(HeadgenError, match="'none' is reserved"):
        load_library(reserved)
    described = tmp_path / "described"
    described.mkdir()
    tet.export(described / "crop.obj")
    (described / "library.json").write_text(json.dumps({"styles": {"ghost": {"name": "ghost"}}}))
    with pytest.raises(HeadgenError, match="describes ghost, which have no mesh file"):
        load_library(described)
    (described / "library.json").write_text("{not json")
    with pytest.raises(HeadgenError, match="cannot read it as JSON"):
        load_library(described)


def test_user_library_units_names_and_lookup(tmp_path):
    box = trimesh.creation.box(extents=(0.2, 0.1, 0.3))
    box.export(tmp_path / "afro.ply")
    box.export(tmp_path / "crop.glb")
    (tmp_path / "library.json").write_text(json.dumps({"styles": {"afro": {"name": "Afro", "text": "an afro"}}}))
    lib = load_library(tmp_path, scale=2.0)  # a head 2 model units tall
    assert lib.names == ["afro", "crop"] and lib.get("afro").display == "Afro" and lib.get("crop").display == "crop"
    assert np.allclose(lib.get("afro").vertices.numpy(), box.vertices * 2.0, atol=1e-6)
    assert lib.get("crop").faces.shape == (12, 3)
    with pytest.raises(HeadgenError, match=r"no hairstyle 'afr' \(did you mean 'afro'\?\).*afro, crop"):
        lib.get("afr")
    (tmp_path / "library.json").write_text(json.dumps({"unit": "model"}))
    assert np.allclose(load_library(tmp_path, scale=2.0).get("afro").vertices.numpy(), box.vertices, atol=1e-6)
    assert load_library(tmp_path, scale=2.0).key != lib.key


def test_hair_fit_follows_the_head(head, library):
    fit = HairFit(head.v_template)
    short = library.get("short")
    assert torch.allclose(fit.fit(short, head.v_template), short.vertices, atol=1e-6)
    moved = fit.fit(short, head.v_template + torch.tensor([0.1, -0.2, 0.3]))
    assert torch.allclose(moved, short.vertices + torch.tensor([0.1, -0.2, 0.3]), atol=1e-5)
    # a head of another identity: the crop still sits on (outside) its skin
    other = head.vertices(1.5 * torch.randn(head.num_identity, generator=torch.Generator().manual_seed(3)))
    gap = torch.cdist(fit.fit(short, other), other).min(1).values
    assert float(gap.quantile(0.01)) > 0.25 * INNER_OFFSET
    with pytest.raises(HeadgenError, match="not the hair library's head model"):
        fit.fit(short, other[:10])


# ---------------------------------------------------------------------------------------- selection
@pytest.mark.parametrize(("prompt", "style", "colour"), [
    ("a woman with long blonde hair", "long", "blonde"),
    ("a man with short black hair", "short", "black"),
    ("a bald man", "none", "none"),
])
def test_demo_prior_selection_finds_the_targets_hair(head, world, cache, prompt, style, colour):
    target = world.target_for(prompt)
    assert (target.spec.hairstyle, target.spec.hair if style != "none" else "none") == (style, colour)
    ctx = make_ctx(head, world, prompt)
    rep = make_rep(head, target.beta)  # the coarse stage's job: the target's identity
    result = ClipHair(parse(ClipHairConfig, {**FAST, "cache_dir": str(cache)})).select(rep, ctx)
    assert (result.style, result.colour) == (style, colour), ctx.logs
    assert ctx.metrics["hair/hair_style"] == style and ctx.metrics["hair/hair_colour"] == colour
    # the target's own drawing scores a cosine of 1; every other style is clearly behind
    scores = sorted(result.style_scores.values(), reverse=True)
    assert result.style_scores[style] == pytest.approx(1.0, abs=1e-4) and scores[1] < 0.99
    assert ctx.metrics[f"hair/style_score/{style}"] == pytest.approx(result.style_scores[style], abs=1e-5)
    assert set(result.style_scores) == {"none", *STYLES}
    assert rep.hair() == {"style": style, "colour": colour, "library": str(cache / head_key(head))}
    if style == "none":
        assert not rep.has_hair and result.colour_scores == {} and rep.export_surface().parts == []
    else:
        assert set(result.colour_scores) == set(FAST["colours"])
        assert max(result.colour_scores, key=result.colour_scores.get) == colour
        assert torch.equal(rep.hair_color, torch.tensor(PRESET_COLOURS[colour]))
        fitted = HairFit(head.v_template).fit(builtin_library(head, cache).get(style), rep.vertices().detach())
        assert torch.allclose(rep.hair_vertices, fitted, atol=1e-6)
        assert any(line.startswith(f"clip-hair: style '{style}'") for line in ctx.logs)
        assert -100 <= ctx.metrics["hair/clip_score"] <= 100
    # head-only rendering (what optimisation stages see) is unchanged
    assert rep.render_input().parts == []


def test_demo_clip_text_is_the_target_drawn_like_a_candidate(head, world, cache, library):
    clip = DemoClip(world)
    sel = selector(cache)
    imager = sel.imager("cpu")
    fit = HairFit(head.v_template)
    scene = HairScene(imager, library, fit, None)
    prompt = "a woman with a bun and red hair"
    target = world.target_for(prompt)
    assert (target.spec.hairstyle, target.spec.hair) == ("bun", "red")
    e_t = clip.text_embeddings([prompt], scene=scene)[0]
    verts = head.vertices(target.beta)
    hair = (fit.fit(library.get("bun"), verts), library.get("bun").faces, torch.tensor(HAIR_COLOURS["red"]))
    e_drawn = F.normalize(clip.image_embeddings(imager.images(verts, head.faces, hair)).mean(0), dim=0)
    assert float(e_t @ e_drawn) == pytest.approx(1.0, abs=1e-5)
    # without a scene the text embedding is still the bare-geometry one (identity selection unchanged)
    assert float(clip.text_embeddings([prompt])[0] @ clip.head_embedding(target.beta)) == pytest.approx(1.0, abs=1e-5)
    assert float(clip.text_embeddings([prompt])[0] @ e_t) < 0.99


def test_keywords_give_demo_targets_a_hairstyle():
    assert spec_for("a young woman with a bob").hairstyle == "bob"
    assert spec_for("a punk with a mohawk").hairstyle == "mohawk"
    assert spec_for("an old bald woman").hairstyle == "none"
    assert spec_for("a woman").hairstyle == "long" and spec_for("a sailor").hairstyle == "short"


@pytest.mark.parametrize("override", [{"style": "none"}, {"library": "none"}])
def test_none_skips_hair_without_clip(head, world, cache, override, library):
    ctx = make_ctx(head, world, "a woman with long blonde hair")
    rep = make_rep(head)
    rep.set_hair(library.get("long").vertices, library.get("long").faces, torch.ones(3), style="long")
    sel = selector(cache, **override)
    assert sel.cfg.unused_models() == {"model"}
    result = sel.select(rep, ctx)
    assert (result.style, result.colour) == ("none", "none") and not rep.has_hair
    assert rep.hair() == {"style": "none", "colour": "none"} and ctx.metrics["hair/hair_style"] == "none"
    assert "clip_models" not in ctx.state and ctx.logs == ["clip-hair: no hair (style: none)"]


def test_a_given_style_and_colour_need_no_clip_and_bad_names_fail(head, world, cache):
    ctx = make_ctx(head, world, "anyone")
    rep = make_rep(head)
    sel = selector(cache, style="long", colour="red")
    assert sel.cfg.unused_models() == {"model"}
    result = sel.select(rep, ctx)
    assert (result.style, result.colour) == ("long", "red") and "clip_models" not in ctx.state
    assert torch.equal(rep.hair_color, torch.tensor(PRESET_COLOURS["red"]))
    with pytest.raises(HeadgenError, match=r"no hairstyle 'lnog' \(did you mean 'long'\?\)"):
        selector(cache, style="lnog", colour="red").select(rep, ctx)
    with pytest.raises(HeadgenError, match="unknown hair colour 'pink'.*black, brown"):
        selector(cache, colours=["black", "pink"])
    with pytest.raises(HeadgenError, match="can carry hair"):
        selector(cache, style="long", colour="red").select(SimpleNamespace(), ctx)


# ---------------------------------------------------------------------------------------- hand-over
def test_hair_survives_results_and_stage_handover(head, library, tmp_path):
    from headgen.stages.results import load_result, save_result

    ctx = SimpleNamespace(head=head, device=torch.device("cpu"))
    rep = make_rep(head, texture="rgb", texture_size=8)
    bob = library.get("bob")
    rep.set_hair(bob.vertices, bob.faces, torch.tensor(PRESET_COLOURS["grey"]), style="bob", colour="grey")
    save_result(tmp_path, rep, None)
    back = load_result(tmp_path, ctx, None)
    assert back.hair() == {"style": "bob", "colour": "grey"} and torch.equal(back.hair_vertices, bob.vertices)
    assert torch.equal(back.hair_faces, bob.faces) and torch.equal(back.hair_color, rep.hair_color)
    # the next stage's representation (other options) starts from this one, hair included
    nxt = make_rep(head, texture="both", texture_size=8, specular=True)
    nxt.load_from(back)
    assert nxt.hair()["style"] == "bob" and nxt.hair_faces.shape == bob.faces.shape
    surface = nxt.export_surface()
    assert [p.name for p in surface.parts] == ["hair"] and torch.equal(surface.parts[0].base_color, rep.hair_color)
    assert nxt.render_input().parts == []
    # results saved before the hair stage existed still load (bald)
    from safetensors.torch import load_file, save_file

    tensors = {k: v for k, v in load_file(str(tmp_path / "result.safetensors")).items() if not k.startswith("hair")}
    save_file(tensors, str(tmp_path / "result.safetensors"))
    old = load_result(tmp_path, ctx, None)
    assert not old.has_hair and old.hair() == {}


def test_recipe_runs_hair_after_carving_and_can_skip_it():
    from headgen.config.compose import compose
    from headgen.config.recipe import validate

    cfg = validate(compose("methods/dreamface.yaml"))
    assert list(cfg.stages) == ["coarse", "carve", "hair", "texture-latent", "texture-image", "pbr", "export"]
    hair = cfg.stages["hair"]
    assert hair.type == "select" and hair.config.selector.type == "clip-hair"
    assert hair.config.selector.config.library == "builtin" and hair.config.selector.config.style == "auto"
    skip = validate(compose("methods/dreamface.yaml", ["stages.hair.selector.style=none"]))
    assert skip.stages["hair"].config.selector.config.skip


def test_pretrained_clip_path_scores_candidates_and_the_relative_term(head, cache, tmp_path):
    from headgen.config.recipe import ModelSpec
    from headgen.models.random_init import save_random_clip
    from headgen.prior.clip import load_clip

    folder = save_random_clip(tmp_path / "tiny-clip")
    models = {"tiny_clip": ModelSpec(hub_id="example/tiny-clip", local_dir=str(folder), kind="clip")}
    ctx = make_ctx(head, None, "a man with short black hair")
    ctx.config.models, ctx.config.prior, ctx.state = models, "pretrained", {}
    ctx.prior = PriorChoice("pretrained")
    sel = selector(cache, model="tiny_clip", colours=["black", "blonde"], lambda_relative=0.5)
    rep = make_rep(head)
    result = sel.select(rep, ctx)
    # recompute the scores by hand from the candidates' renders
    clip = load_clip(models, "tiny_clip")
    imager, fit, lib = sel.imager("cpu"), HairFit(head.v_template), builtin_library(head, cache)
    verts = rep.vertices().detach()

    def emb(style, colour):
        hair = None if style == "none" else (fit.fit(lib.get(style), verts), lib.get(style).faces,
                                              torch.tensor(PRESET_COLOURS[colour]))
        return F.normalize(clip.image_embeddings(imager.images(verts, head.faces, hair)).mean(0), dim=0)

    names = ["none", *lib.names]
    e = torch.stack([emb(s, "brown") for s in names])
    e_t, e_a = clip.text_embeddings(["a man with short black hair", "the head"])
    expected = e @ e_t + 0.5 * (F.normalize(e - e.mean(0), dim=-1) @ F.normalize(e_t - e_a, dim=0))
    assert [result.style_scores[n] for n in names] == pytest.approx(expected.tolist(), abs=1e-4)
    assert result.style == names[int(expected.argmax())]
    if result.style != "none":
        assert set(result.colour_scores) == {"black", "blonde"} and rep.hair()["colour"] == result.colour
    assert ctx.metrics["hair/hair_style"] == result.style and "hair/clip_score" in ctx.metrics
