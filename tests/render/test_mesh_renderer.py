"""MeshRenderer: coverage, shading, normal maps, materials, gradients; Mesh normals/tangents."""

from __future__ import annotations

import math

import pytest
import torch
import trimesh

from headgen.cameras import Cameras, Lights
from headgen.config import parse
from headgen.errors import ConfigError, HeadgenError
from headgen.geometry import Mesh, SurfaceGeometry
from headgen.render.mesh_renderer import MeshRenderer


def plane(half: float = 0.5, mirror_u: bool = False) -> Mesh:
    """A square in the z = 0 plane facing +z; u along +x (or -x), v along +y."""
    xy = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]) * half
    pos = torch.cat([xy, torch.zeros(4, 1)], 1)
    uv = (xy / (2 * half)) + 0.5
    if mirror_u:
        uv[:, 0] = 1 - uv[:, 0]
    return Mesh(pos, torch.tensor([[0, 1, 2], [0, 2, 3]]), uv)


def front_camera(res: int = 64, distance: float = 3.0, fov: float = 40.0, azimuth: float = 0.0) -> Cameras:
    return Cameras.from_spherical(
        torch.zeros(1), torch.tensor([azimuth]), torch.tensor([distance]), torch.tensor([fov]), res
    )


def renderer(**kw) -> MeshRenderer:
    kw.setdefault("resolution", 64)
    kw.setdefault("backend", "torch")
    return MeshRenderer(MeshRenderer.Config(**kw))


def test_unit_square_covers_expected_pixels() -> None:
    # Nearly orthographic: far away, narrow field of view. Half the view height is 1.6 units, so the
    # unit square spans NDC [-0.3125, 0.3125] = pixels [22, 42) of 64 in both directions.
    fov = math.degrees(2 * math.atan(1.6 / 10.0))
    cams = front_camera(64, distance=10.0, fov=fov)
    hard = renderer(antialias=False).render(plane(0.5), cams, modes=("opacity",))["opacity"]
    assert hard.shape == (1, 64, 64, 1)
    assert int(hard.sum()) == 400
    assert hard[0, 22:42, 22:42].min() == 1 and hard[0, 21].max() == 0 and hard[0, :, 42].max() == 0
    soft = renderer().render(plane(0.5), cams, modes=("opacity",))["opacity"]
    assert abs(soft.sum().item() - 400) < 1e-3


def test_modes_shapes_ranges_and_backgrounds() -> None:
    mesh = plane()
    geo = SurfaceGeometry(mesh, albedo_map=torch.rand(16, 16, 3), latent_map=torch.randn(4, 8, 8))
    cams = front_camera()
    modes = ("rgb", "albedo", "shading", "normal", "opacity", "depth", "latent", "uv")
    out = renderer().render(geo, cams, modes=modes, generator=torch.Generator().manual_seed(0))
    assert list(out) == list(modes)
    chans = {"rgb": 3, "albedo": 3, "shading": 3, "normal": 3, "opacity": 1, "depth": 1, "latent": 4, "uv": 2}
    for m, c in chans.items():
        assert out[m].shape == (1, 64, 64, c), m
    for m in ("rgb", "albedo", "shading", "normal", "opacity"):
        assert out[m].min() >= 0 and out[m].max() <= 1 + 1e-6, m
    corner = (0, 0, 0)
    assert torch.equal(out["rgb"][corner], torch.ones(3))  # white background
    assert torch.equal(out["normal"][corner], torch.zeros(3))  # premultiplied: black background
    assert out["depth"][corner].item() == 0 and out["uv"][corner].abs().sum() == 0
    centre = (0, 32, 32)
    # The plane is perpendicular to the view axis at distance 3: depth is exactly 3 everywhere on it.
    assert torch.allclose(out["depth"][centre], torch.tensor([3.0]), atol=1e-4)
    assert torch.allclose(out["normal"][centre], torch.tensor([0.5, 0.5, 1.0]), atol=1e-5)
    assert torch.allclose(out["uv"][centre], torch.tensor([0.5, 0.5]), atol=0.02)
    black = renderer(background="black").render(geo, cams, modes=("rgb",))["rgb"]
    assert torch.equal(black[corner], torch.zeros(3))
    r1 = renderer(background="random").render(geo, cams, generator=torch.Generator().manual_seed(3))["rgb"]
    r2 = renderer(background="random").render(geo, cams, generator=torch.Generator().manual_seed(3))["rgb"]
    assert torch.equal(r1, r2) and not torch.equal(r1[corner], torch.ones(3))


def test_texture_orientation_top_of_image_is_v_one() -> None:
    albedo = torch.zeros(2, 2, 3)
    albedo[0, :, 0] = 1.0  # top row of the texture image red
    albedo[1, :, 2] = 1.0  # bottom row blue
    geo = SurfaceGeometry(plane(), albedo_map=albedo)
    img = renderer(antialias=False).render(geo, front_camera(), modes=("albedo",))["albedo"][0]
    assert img[24, 32, 0] > 0.9 and img[40, 32, 2] > 0.9  # red at the top of the rendered square


def test_latent_background_is_random_and_reproducible() -> None:
    geo = SurfaceGeometry(plane(), latent_map=torch.zeros(4, 8, 8))
    cams = Cameras.from_spherical(torch.zeros(2), torch.zeros(2), torch.full((2,), 3.0), torch.full((2,), 40.0), 32)
    r = renderer(resolution=32)
    a = r.render(geo, cams, modes=("latent",), generator=torch.Generator().manual_seed(1))["latent"]
    b = r.render(geo, cams, modes=("latent",), generator=torch.Generator().manual_seed(1))["latent"]
    c = r.render(geo, cams, modes=("latent",), generator=torch.Generator().manual_seed(2))["latent"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[0, 0, 0], a[0, 31, 31])  # one background vector per image
    assert not torch.equal(a[0, 0, 0], a[1, 0, 0])
    assert a[0, 16, 16].abs().max() < 1e-6  # the (zero) latent map inside the square


def lambert_centre(normal_map: torch.Tensor | None, light_dir: torch.Tensor) -> torch.Tensor:
    geo = SurfaceGeometry(plane(), albedo_map=torch.full((8, 8, 3), 0.5), normal_map=normal_map)
    lights = Lights(light_dir[None], torch.full((1, 3), 0.7), torch.full((1, 3), 0.3))
    return renderer().render(geo, front_camera(), lights, modes=("rgb",))["rgb"]


def encoded(n: torch.Tensor) -> torch.Tensor:
    return (torch.nn.functional.normalize(n, dim=0) + 1) / 2


def test_normal_map_flat_is_identity_and_tilt_follows_the_light() -> None:
    light = torch.tensor([math.sin(math.radians(40)), 0.0, math.cos(math.radians(40))])
    plain = lambert_centre(None, light)
    flat = lambert_centre(torch.tensor([0.5, 0.5, 1.0]).expand(8, 8, 3).clone(), light)
    assert torch.allclose(plain, flat, atol=1e-6)
    tilt = math.radians(30)
    toward = lambert_centre(encoded(torch.tensor([math.sin(tilt), 0, math.cos(tilt)])).expand(8, 8, 3), light)
    away = lambert_centre(encoded(torch.tensor([-math.sin(tilt), 0, math.cos(tilt)])).expand(8, 8, 3), light)
    c = (0, 32, 32, 0)
    expect = [0.5 * (0.3 + 0.7 * math.cos(math.radians(a))) for a in (40, 10, 70)]
    assert plain[c].item() == pytest.approx(expect[0], abs=1e-4)
    assert toward[c].item() == pytest.approx(expect[1], abs=1e-4)
    assert away[c].item() == pytest.approx(expect[2], abs=1e-4)
    # Mirrored UVs flip the tangent and handedness: "toward +u" then means toward -x.
    geo = SurfaceGeometry(
        plane(mirror_u=True),
        albedo_map=torch.full((8, 8, 3), 0.5),
        normal_map=encoded(torch.tensor([math.sin(tilt), 0, math.cos(tilt)])).expand(8, 8, 3),
    )
    lights = Lights(light[None], torch.full((1, 3), 0.7), torch.full((1, 3), 0.3))
    mirrored = renderer().render(geo, front_camera(), lights, modes=("rgb",))["rgb"]
    assert mirrored[c].item() == pytest.approx(expect[2], abs=1e-4)


def test_gradients_reach_albedo_latent_and_positions() -> None:
    mesh = plane()
    v = mesh.v_pos.clone().requires_grad_(True)
    albedo = torch.rand(8, 8, 3, requires_grad=True)
    latent = torch.randn(4, 8, 8, requires_grad=True)
    geo = SurfaceGeometry(mesh.with_positions(v), albedo_map=albedo, latent_map=latent)
    out = renderer().render(geo, front_camera(azimuth=20), modes=("rgb", "latent", "opacity"))
    w = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    ((out["rgb"] * w).sum() + out["latent"].square().sum() + out["opacity"].sum()).backward()
    for t in (albedo, latent, v):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def opacity_sum(scale: torch.Tensor) -> torch.Tensor:
    mesh = plane(0.5)
    geo = SurfaceGeometry(mesh.with_positions(mesh.v_pos.double() * scale))
    cams = front_camera(48, azimuth=25.0)
    return renderer(resolution=48).render(geo, cams, modes=("opacity",))["opacity"].sum()


def test_silhouette_gradient_through_renderer_matches_finite_differences() -> None:
    s = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(opacity_sum(s), s)
    h = 0.02
    fd = (opacity_sum(s.detach() + h) - opacity_sum(s.detach() - h)) / (2 * h)
    assert fd.item() > 100
    assert abs(g.item() - fd.item()) < 0.1 * fd.item()


def test_materials_and_normal_spaces() -> None:
    cams = front_camera(azimuth=30.0)
    mesh = plane()

    def red_right(points: torch.Tensor) -> torch.Tensor:
        right = (points[:, :1] > 0).float()
        return torch.cat([right, torch.zeros_like(right), 1 - right], 1)

    img = renderer(antialias=False).render(SurfaceGeometry(mesh, albedo_fn=red_right), cams, modes=("albedo",))
    a = img["albedo"][0]
    assert a[32, 38, 0] == 1 and a[32, 26, 2] == 1  # world +x is on the right of a front view
    vc = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]])
    b = renderer().render(SurfaceGeometry(mesh, v_color=vc), cams, modes=("albedo",))["albedo"][0]
    # The centre lies on the diagonal v0-v2: half red, half blue.
    assert torch.allclose(b[32, 32], torch.tensor([0.5, 0.0, 0.5]), atol=0.05)
    world = renderer().render(mesh, cams, modes=("normal",))["normal"][0, 32, 32]
    camera = renderer(normal_space="camera").render(mesh, cams, modes=("normal",))["normal"][0, 32, 32]
    assert torch.allclose(world, torch.tensor([0.5, 0.5, 1.0]), atol=1e-5)
    rot = cams.c2w[0, :3, :3]
    assert torch.allclose(camera * 2 - 1, rot.T @ torch.tensor([0.0, 0.0, 1.0]), atol=1e-5)
    assert camera[0] < 0.5 < camera[2]  # seen from the right, the plane faces left-and-forward


def test_errors_and_config() -> None:
    r = renderer()
    with pytest.raises(HeadgenError, match="did you mean 'normal'"):
        r.render(plane(), front_camera(), modes=("normals",))
    with pytest.raises(HeadgenError, match="need a material"):
        r.render(plane(), front_camera(), modes=("rgb",))
    no_uv = Mesh(plane().v_pos, plane().t_pos_idx)
    with pytest.raises(HeadgenError, match="need UVs"):
        r.render(SurfaceGeometry(no_uv, latent_map=torch.zeros(4, 4, 4)), front_camera(), modes=("latent",))
    cfg = parse(MeshRenderer.Config, {"resolution": 128, "backend": "torch", "background": "random"})
    assert cfg.resolution == 128 and cfg.background == "random"
    with pytest.raises(ConfigError):
        parse(MeshRenderer.Config, {"backend": "cuda"})
    assert (MeshRenderer.registered_kind, MeshRenderer.registered_name) == ("renderer", "mesh")


def test_mesh_normals_and_tangents() -> None:
    ico = trimesh.creation.icosphere(subdivisions=2)
    sphere = Mesh(torch.tensor(ico.vertices, dtype=torch.float32), torch.tensor(ico.faces))
    vn = sphere.vertex_normals()
    assert (vn * torch.nn.functional.normalize(sphere.v_pos, dim=-1)).sum(-1).min() > 0.999
    fn = sphere.face_normals()
    assert ((fn * sphere.v_pos[sphere.t_pos_idx].mean(1)).sum(-1) > 0).all()  # outward
    t = plane().vertex_tangents()
    assert torch.allclose(t, torch.tensor([1.0, 0, 0, 1.0]).expand(4, 4))
    tm = plane(mirror_u=True).vertex_tangents()
    assert torch.allclose(tm, torch.tensor([-1.0, 0, 0, -1.0]).expand(4, 4))
    # Separate UV indices (a seam): tangents follow the UV vertices.
    p = plane()
    seam = Mesh(p.v_pos, p.t_pos_idx, torch.cat([p.v_tex, 1 - p.v_tex]), torch.tensor([[0, 1, 2], [4, 6, 7]]))
    ts = seam.vertex_tangents()
    assert ts.shape == (8, 4) and ts[0, 3] == 1 and torch.allclose(ts[4, :3], torch.tensor([-1.0, 0, 0]))
    assert seam.with_positions(p.v_pos * 2).v_pos.max() == 1.0
    with pytest.raises(HeadgenError):
        Mesh(torch.zeros(4, 2), p.t_pos_idx)


def test_closed_mesh_silhouette_gradient_matches_finite_differences() -> None:
    # On a finely tessellated closed surface the triangle covering a pixel next to the silhouette
    # rarely owns the silhouette edge; antialiasing must still find it (5120 faces at 64 px).
    ico = trimesh.creation.icosphere(subdivisions=4)
    mesh = Mesh(torch.tensor(ico.vertices, dtype=torch.float64), torch.tensor(ico.faces))
    cams = Cameras.from_spherical(
        torch.tensor([10.0]), torch.tensor([30.0]), torch.tensor([3.0]), torch.tensor([45.0]), 64
    )
    r = renderer()

    def total(s: torch.Tensor) -> torch.Tensor:
        return r.render(mesh.with_positions(mesh.v_pos * s), cams, modes=("opacity",))["opacity"].sum()

    s = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(total(s), s)
    h = 0.01
    fd = (total(s.detach() + h) - total(s.detach() - h)) / (2 * h)
    assert fd.item() > 1000
    assert abs(g.item() - fd.item()) < 0.1 * fd.item()


def test_normal_opacity_is_the_premultiplied_normal_in_minus_one_one_next_to_coverage() -> None:
    mesh = plane()
    cams = front_camera(azimuth=20.0)
    out = renderer().render(mesh, cams, modes=("normal", "opacity", "normal_opacity"))
    no = out["normal_opacity"]
    assert no.shape == (1, 64, 64, 4)
    # HeadArtist's early-geometry input: cat(normal * 2 - opacity, opacity), the same everywhere,
    # silhouette (antialiased) pixels included.
    expected = torch.cat([out["normal"] * 2 - out["opacity"], out["opacity"]], dim=-1)
    assert torch.allclose(no, expected, atol=1e-5)
    assert torch.allclose(no[0, 32, 32], torch.tensor([0.0, 0.0, 1.0, 1.0]), atol=1e-5)
    assert torch.equal(no[0, 0, 0], torch.zeros(4))


def test_parts_share_the_depth_buffer_and_keep_their_own_materials() -> None:
    # A textured "head" plane at z = 0 and a smaller constant-colour "hair" plane in front of it,
    # tilted by a normal map on the head only.
    head_mesh = plane(0.5)
    tex = torch.zeros(16, 16, 3)
    tex[..., 1] = 1.0  # green head
    nmap = torch.tensor([0.5, 0.5, 1.0]).repeat(8, 8, 1)
    hair_mesh = Mesh(plane(0.25).v_pos + torch.tensor([0.25, 0.0, 0.2]), plane(0.25).t_pos_idx)  # no UVs
    red = torch.tensor([1.0, 0.0, 0.0])
    hair = SurfaceGeometry(hair_mesh, base_color=red, name="hair")
    geo = SurfaceGeometry(head_mesh, albedo_map=tex, normal_map=nmap, parts=[hair])
    cams = front_camera(distance=3.0, fov=40.0)
    r = renderer(antialias=False)
    out = r.render(geo, cams, modes=("albedo", "rgb", "depth", "opacity", "uv"))
    alb, depth = out["albedo"][0], out["depth"][0, ..., 0]
    # One unit at distance 3 with a 40 degree view spans 64 / (2 * 3 * tan 20deg) ~ 29.3 pixels.
    ppu = 64 / (2 * 3.0 * math.tan(math.radians(20.0)))
    hair_col = round(32 + 0.35 * ppu)  # hair covers x in [0, 0.5]: its centre
    head_col = round(32 - 0.35 * ppu)  # only the head at x = -0.35
    assert torch.equal(alb[32, hair_col], red) and torch.equal(alb[32, head_col], torch.tensor([0.0, 1.0, 0.0]))
    # the nearer surface wins whatever the order of the parts; depth is the hair's (camera at z = 3)
    assert depth[32, hair_col] == pytest.approx(2.8, abs=1e-4) and depth[32, head_col] == pytest.approx(3.0, abs=1e-4)
    behind = SurfaceGeometry(hair_mesh, base_color=red, parts=[SurfaceGeometry(head_mesh, albedo_map=tex)])
    swapped = r.render(behind, cams, modes=("albedo",))["albedo"][0]
    assert torch.equal(swapped, alb)
    # the head alone draws exactly as before; the uv of a part without UVs is 0
    alone = r.render(SurfaceGeometry(head_mesh, albedo_map=tex, normal_map=nmap), cams, modes=("albedo", "rgb"))
    assert torch.equal(alone["albedo"][0, :, :20], alb[:, :20]) and torch.equal(alone["rgb"][0, :, :20],
                                                                                  out["rgb"][0, :, :20])
    assert torch.equal(out["uv"][0, 32, hair_col], torch.zeros(2)) and out["uv"][0, 32, head_col].min() > 0
    assert float(out["opacity"].sum()) > float(r.render(head_mesh, cams, modes=("opacity",))["opacity"].sum())
    with pytest.raises(HeadgenError, match="needs a base_latent on every part, but hair has none"):
        r.render(SurfaceGeometry(head_mesh, latent_map=torch.zeros(4, 4, 4), parts=[hair]), cams, modes=("latent",))
    # latent renders draw a part with its constant latent, the head with its latent map
    lat_part = SurfaceGeometry(hair_mesh, base_color=red, base_latent=torch.full((4,), 2.0), name="hair")
    lat = r.render(SurfaceGeometry(head_mesh, latent_map=torch.ones(4, 4, 4), parts=[lat_part]), cams,
                   modes=("latent",))["latent"][0]
    assert torch.allclose(lat[32, hair_col], torch.full((4,), 2.0)) and torch.allclose(lat[32, head_col],
                                                                                        torch.ones(4))
    # an alpha-blended overlay part is not drawn: the render equals the head's alone
    overlay = SurfaceGeometry(hair_mesh, base_color=red, name="film", alpha=0.3)
    skipped = r.render(SurfaceGeometry(head_mesh, albedo_map=tex, normal_map=nmap, parts=[overlay]), cams,
                       modes=("albedo",))["albedo"]
    assert torch.equal(skipped, alone["albedo"])
    with pytest.raises(HeadgenError, match="part 'bare'"):
        r.render(SurfaceGeometry(head_mesh, albedo_map=tex, parts=[SurfaceGeometry(hair_mesh, name="bare")]), cams,
                 modes=("albedo",))
    with pytest.raises(HeadgenError, match="cannot have parts"):
        SurfaceGeometry(head_mesh, parts=[geo])


def test_cull_backfaces_drops_only_what_faces_away() -> None:
    # A plane facing +z: seen from the front it draws either way; from behind only without culling.
    r, culled = renderer(antialias=False), renderer(antialias=False, cull_backfaces=True)
    front, back = front_camera(), front_camera(azimuth=180.0)
    assert torch.equal(r.render(plane(), front, modes=("opacity",))["opacity"],
                       culled.render(plane(), front, modes=("opacity",))["opacity"])
    assert r.render(plane(), back, modes=("opacity",))["opacity"].sum() > 100
    assert culled.render(plane(), back, modes=("opacity",))["opacity"].sum() == 0
    # A closed surface (the built-in head) looks the same from any side, up to silhouette pixels.
    from headgen.heads import load_builtin_head

    head = load_builtin_head("low")
    mesh = Mesh(head.v_template, head.faces)
    for cams in (front_camera(), front_camera(azimuth=120.0)):
        a = r.render(mesh, cams, modes=("normal", "opacity"))
        b = culled.render(mesh, cams, modes=("normal", "opacity"))
        differ = (a["normal"] - b["normal"]).abs().amax(-1) > 1e-4
        assert differ.float().mean() < 0.01 and torch.equal(a["opacity"], b["opacity"])


def test_a_surface_with_a_colour_field_moves_only_with_its_module():
    """GPU runs found it: a surface moved to another device kept its colour field on the first, and the
    render failed deep inside with a device mismatch. Now the move itself says what to do."""
    surface = SurfaceGeometry(Mesh(torch.zeros(3, 3), torch.tensor([[0, 1, 2]])), albedo_fn=lambda x: x)
    assert surface.to("cpu").albedo_fn is surface.albedo_fn
    with pytest.raises(HeadgenError, match=r"colour is a field on cpu; move the representation"):
        surface.to("meta")
