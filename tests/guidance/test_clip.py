"""CLIP wrapper, DreamFace CLIP selection and the demo CLIP (tiny random CLIP, built-in head, 64 px)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from headgen.cameras import Lights
from headgen.config import build, parse
from headgen.config.recipe import ModelSpec
from headgen.geometry.mesh import Mesh
from headgen.models.random_init import save_random_clip
from headgen.prior import PriorChoice
from headgen.prior.clip import PretrainedClip, load_clip
from headgen.prior.demo.clip import DemoClip, projection
from headgen.prior.demo.world import DemoWorld
from headgen.prior.load import get_clip
from headgen.render.mesh_renderer import MeshRenderer
from representations.parametric_mesh import ParametricMesh, ParametricMeshConfig
from selection.clip_select import (
    BETA_BLOCK,
    ClipSelect,
    ClipSelectConfig,
    GeometryImager,
    candidate_betas,
    light_directions,
)

PROMPT = "an old man with a grey beard"
NUM = 20  # identity coefficients selected


@pytest.fixture(scope="module")
def head():
    return build("head", {"type": "builtin"}).load()


def tiny_clip(folder, break_eos=False):
    folder = save_random_clip(folder)
    if break_eos:
        # CLIP's real special-token ids (49406/49407), which the character tokenizer (ids 512/513)
        # never emits: the text tower then pools every text at the first position.
        cfg = json.loads((folder / "config.json").read_text())
        cfg["text_config"].update(bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
        (folder / "config.json").write_text(json.dumps(cfg))
    return {"tiny_clip": ModelSpec(hub_id="example/tiny-clip", local_dir=str(folder), kind="clip")}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def clip(models):
    return load_clip(models, "tiny_clip", "cpu")


def make_ctx(head, models, prompt=PROMPT, prior="pretrained"):
    logs: list[str] = []
    config = SimpleNamespace(prompt=prompt, edit_prompt="", models=models, prior=prior)
    return SimpleNamespace(head=head, device=torch.device("cpu"), config=config, state={}, prior=PriorChoice(prior),
                           metrics={}, log=logs.append, logs=logs, current_stage="coarse")


def make_rep(head, num=NUM):
    cfg = parse(ParametricMeshConfig, {"num_identity": num, "displacement": False, "normal_map_size": 0,
                                       "texture": "none"})
    return ParametricMesh(cfg, SimpleNamespace(head=head, device=torch.device("cpu")))


def selector(tmp_path, **kw):
    node = {"model": "tiny_clip", "pool_size": 16, "batch_size": 8, "resolution": 64,
            "cache_dir": str(tmp_path / "pools"), **kw}
    return ClipSelect(parse(ClipSelectConfig, node))


def shard_file(root):
    (pool_dir,) = list(root.iterdir())  # one pool key
    (path,) = list(pool_dir.glob("shard-*.safetensors"))
    return path


def read_pool(root):
    """(betas, embeddings) of the pool cached under ``root``, straight from its file."""
    from safetensors.torch import load_file

    data = load_file(str(shard_file(root)))
    return data["betas"].clone(), data["embeddings"].clone()  # not views of the memory-mapped file


# ---------------------------------------------------------------------------------------- wrapper
def test_clip_score_is_100_cosine_of_embeddings_computed_by_hand(clip, models):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 48, 40, 3, generator=g)
    # by hand: shortest edge to 32 (bicubic, antialiased), centre crop 32x32, CLIP mean/std
    x = F.interpolate(images.permute(0, 3, 1, 2), size=(38, 32), mode="bicubic", antialias=True).clamp(0, 1)
    x = x[:, :, 3:35, :]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    with torch.no_grad():
        img = clip.model.get_image_features(pixel_values=(x - mean) / std).pooler_output
        tok = clip.tokenizer(["a bald man"], padding="max_length", max_length=77, return_tensors="pt")
        txt = clip.model.get_text_features(**tok).pooler_output
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    emb = clip.image_embeddings(images)
    assert emb.shape == (3, 16)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(emb, img, atol=1e-5)
    t = clip.text_embeddings(["a bald man", "the face"])
    assert t.shape == (2, 16) and torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(t[0], txt[0], atol=1e-5)
    expected = float(100 * (img @ txt[0]).mean())
    assert clip.score(images, "a bald man") == pytest.approx(expected, abs=1e-3)
    assert abs(expected) > 1e-2  # the check is not vacuous


def test_texts_get_distinct_embeddings_and_a_broken_eos_id_warns(clip, tmp_path):
    t = clip.text_embeddings([PROMPT, "the face", PROMPT])
    assert torch.equal(t[0], t[2]) and float(t[0] @ t[1]) < 0.95
    with pytest.warns(UserWarning, match="same embedding"):
        load_clip(tiny_clip(tmp_path / "broken", break_eos=True), "tiny_clip")


def test_preprocessing_matches_the_reference_image_processor(clip, models):
    from headgen.models.zoo import load_component

    processor = load_component("tiny_clip", models["tiny_clip"], "clip_processor")
    g = torch.Generator().manual_seed(1)
    for shape in ((32, 32), (64, 64), (48, 80)):
        img = torch.rand(2, *shape, 3, generator=g)
        img = F.avg_pool2d(img.permute(0, 3, 1, 2), 5, 1, 2).permute(0, 2, 3, 1)  # smooth, like renders
        u8 = (img * 255).round().to(torch.uint8)
        ref = processor(images=list(u8.numpy()), return_tensors="pt")["pixel_values"]
        ours = clip.preprocess(u8.float() / 255)
        assert ours.shape == ref.shape == (2, 3, 32, 32)
        assert (ours - ref).abs().max() < (1e-5 if shape == (32, 32) else 0.05), shape


def test_get_clip_follows_the_prior_and_caches(head, models):
    ctx = make_ctx(head, models)
    a = get_clip(ctx, "tiny_clip")
    assert isinstance(a, PretrainedClip) and get_clip(ctx, "tiny_clip") is a
    demo_ctx = make_ctx(head, models, prior="demo")
    demo_ctx.state["demo_world"] = SimpleNamespace(device=torch.device("cpu"))  # DemoClip only needs a device
    d = get_clip(demo_ctx, "tiny_clip")
    assert isinstance(d, DemoClip) and get_clip(demo_ctx, "tiny_clip") is d


def test_light_shading_on_normal_images_equals_the_renderer(head):
    imager = GeometryImager([(0.0, 0.0), (10.0, 45.0)], lights=3, resolution=48)
    verts = head.v_template
    images = imager.images(verts, head.faces).view(2, 3, 48, 48, 3)
    r = MeshRenderer(MeshRenderer.Config(resolution=48, antialias=False, background="white"))
    for j in range(3):
        lights = Lights(imager.light_dirs[:, j], torch.full((2, 3), 0.7), torch.full((2, 3), 0.3))
        ref = r.render(Mesh(head.v_template, head.faces), imager.cameras, lights, modes=("shading",))
        assert (images[:, j] - ref["shading"]).abs().max() < 1e-4, j
    assert images[:, 0].std() > 0.05  # a head, not a blank image
    d = light_directions(10)
    assert torch.allclose(d.norm(dim=-1), torch.ones(10)) and (d[:, 2] >= 0.5 - 1e-6).all()


# ---------------------------------------------------------------------------------------- selection
def test_candidates_do_not_depend_on_batching_or_pool_size(head, clip, tmp_path):
    full = candidate_betas(0, 0, BETA_BLOCK + 40, NUM)
    across = candidate_betas(0, BETA_BLOCK - 5, BETA_BLOCK + 7, NUM)  # spans two generator blocks
    assert torch.equal(across, full[BETA_BLOCK - 5: BETA_BLOCK + 7])
    assert not torch.equal(candidate_betas(1, 0, 4, NUM), full[:4])
    assert torch.allclose(2.0 * full[:8], candidate_betas(0, 0, 8, NUM, scale=2.0))
    # embeddings: batch size 3 without a cache == batch size 8 with one; a larger pool extends the cache
    a = selector(tmp_path, pool_size=12, batch_size=3, cache_dir="")
    b = selector(tmp_path, pool_size=12, batch_size=8)
    emb_a = torch.cat([e for _, _, e in a.pool(head, NUM, clip, a.imager("cpu"))])
    emb_b = torch.cat([e for _, _, e in b.pool(head, NUM, clip, b.imager("cpu"))])
    assert emb_a.shape == (12, 16) and torch.allclose(emb_a, emb_b, atol=1e-6)
    c = selector(tmp_path, pool_size=20, batch_size=8)
    result = c.run(head, NUM, clip, c.imager("cpu"), PROMPT, print)
    assert (result.cache, result.computed) == ("partial", 8)
    emb_c = torch.cat([e for _, _, e in c.pool(head, NUM, clip, c.imager("cpu"))])
    assert torch.allclose(emb_c[:12], emb_a, atol=1e-6)


def test_selection_is_the_argmax_of_the_relative_score_and_the_cache_serves_another_prompt(
        head, models, clip, tmp_path, monkeypatch):
    sel = selector(tmp_path, lambda_relative=0.7)
    ctx = make_ctx(head, models)
    rep = make_rep(head)
    sel.select(rep, ctx, torch.Generator())
    assert ctx.metrics["coarse/pool_cache"] == "miss"
    assert any(line.startswith("computing CLIP pool embeddings for 16 of 16") for line in ctx.logs)
    betas, emb = read_pool(tmp_path / "pools")
    assert betas.shape == (16, NUM) and emb.shape == (16, 16)

    def expected_index(prompt):
        imager = GeometryImager(sel.cfg.views, sel.cfg.lights, 64)
        e_mm = F.normalize(clip.image_embeddings(imager.images(head.v_template, head.faces)).mean(0), dim=0)
        e_t, e_a = clip.text_embeddings([prompt, "the face"])
        d_i = F.normalize(emb - e_mm, dim=-1)
        d_t = F.normalize(e_t - e_a, dim=0)
        s = 1.0 * (F.normalize(emb, dim=-1) @ e_t) + 0.7 * (d_i @ d_t)
        return int(s.argmax()), s

    idx, s = expected_index(PROMPT)
    assert ctx.metrics["coarse/selected_index"] == idx
    assert ctx.metrics["coarse/clip_relative_score"] == pytest.approx(float(s[idx]), abs=1e-5)
    assert torch.equal(rep.beta.detach(), betas[idx]) and torch.equal(rep.beta_star, betas[idx])
    assert -100 <= ctx.metrics["coarse/clip_score"] <= 100

    # another prompt: no candidate is rendered again, the cached embeddings are reused unchanged
    monkeypatch.setattr(ClipSelect, "embed", lambda *a, **k: pytest.fail("re-rendered a cached candidate"))
    other = "a young woman with blonde hair"
    ctx2 = make_ctx(head, models, prompt=other)
    rep2 = make_rep(head)
    selector(tmp_path, lambda_relative=0.7).select(rep2, ctx2)
    assert ctx2.metrics["coarse/pool_cache"] == "hit"
    assert any(line.startswith("reusing cached CLIP pool embeddings") for line in ctx2.logs)
    betas2, emb2 = read_pool(tmp_path / "pools")
    assert torch.equal(emb2, emb) and torch.equal(betas2, betas)
    idx2, _ = expected_index(other)
    assert ctx2.metrics["coarse/selected_index"] == idx2
    assert torch.equal(rep2.beta.detach(), betas[idx2])


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other-candidates"])
def test_a_damaged_cache_is_recomputed_with_a_warning(head, clip, tmp_path, damage):
    sel = selector(tmp_path, pool_size=8)
    first = sel.run(head, NUM, clip, sel.imager("cpu"), PROMPT, print)
    assert first.cache == "miss"
    betas, emb = read_pool(tmp_path / "pools")
    path = shard_file(tmp_path / "pools")
    if damage == "garbage":
        path.write_bytes(b"not a safetensors file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    else:
        from safetensors.torch import load_file, save_file

        data = load_file(str(path))
        meta = {"digest": path.parent.name.rsplit("-", 1)[-1]}
        save_file({"embeddings": data["embeddings"], "betas": data["betas"] + 1}, str(path), metadata=meta)
    with pytest.warns(UserWarning, match="unusable"):
        again = sel.run(head, NUM, clip, sel.imager("cpu"), PROMPT, print)
    assert again.computed == 8 and again.index == first.index
    betas2, emb2 = read_pool(tmp_path / "pools")
    assert torch.equal(betas2, betas) and torch.allclose(emb2, emb, atol=1e-6)


# ---------------------------------------------------------------------------------------- demo CLIP
def test_demo_clip_embeddings_are_fixed_and_normalised():
    p = projection()
    assert p.shape == (768, 128) and torch.equal(p, projection())
    # fixed forever (pool caches are keyed by DemoClip.key, which names the seed, not the numbers)
    assert p[0, :3].tolist() == pytest.approx([-0.0412854, 0.0163928, -0.0226544], abs=1e-6)
    clip = DemoClip(SimpleNamespace(device=torch.device("cpu")))
    img = torch.rand(4, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    e = clip.image_embeddings(img)
    assert e.shape == (4, 128) and torch.allclose(e.norm(dim=-1), torch.ones(4), atol=1e-5)
    # brightness and contrast do not change the embedding (mean removed, normalised); content does
    assert torch.allclose(clip.image_embeddings(img * 0.5 + 0.2), e, atol=1e-5)
    assert float(e[0] @ e[1]) < 0.9


def test_demo_clip_selection_prefers_the_target(head, models, tmp_path):
    ctx = make_ctx(head, models, prior="demo")
    world = DemoWorld(head, PROMPT)
    ctx.state["demo_world"] = world
    clip = get_clip(ctx, "tiny_clip")
    assert isinstance(clip, DemoClip)
    sel = selector(tmp_path)
    num = head.num_identity
    rep = make_rep(head, num)
    sel.select(rep, ctx)
    assert ctx.metrics["coarse/pool_cache"] == "miss"
    imager = sel.imager("cpu")
    pool = torch.cat([e for _, _, e in sel.pool(head, num, clip, imager)])
    verts = head.vertices(world.target.beta)
    e_target = F.normalize(clip.image_embeddings(imager.images(verts, head.faces)).mean(0), dim=0)
    e_t, e_a = clip.text_embeddings([PROMPT, "the face"])
    e_mm = F.normalize(clip.image_embeddings(imager.images(head.v_template, head.faces)).mean(0), dim=0)
    bank = torch.stack([clip.head_embedding(t.beta) for t in world.bank])
    assert torch.allclose(e_a, F.normalize(bank.mean(0), dim=0), atol=1e-5)

    def score(e):
        return e @ e_t + F.normalize(e - e_mm, dim=-1) @ F.normalize(e_t - e_a, dim=0)

    # the target's own geometry beats every random candidate
    assert float(score(e_target)) > float(score(pool).max()) + 0.05
    assert ctx.metrics["coarse/selected_index"] == int(score(pool).argmax())
    # the text embedding is the target's renders' mean embedding
    assert float(e_t @ clip.head_embedding(world.target.beta)) == pytest.approx(1.0, abs=1e-5)
