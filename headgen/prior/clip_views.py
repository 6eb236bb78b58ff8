"""How CLIP sees a head: bare geometry (and attached parts such as hair) rendered from fixed views under
camera-relative directional lights, embedded as the renormalised mean over those images.

Shared by CLIP selection (:mod:`selection.clip_select`, :mod:`selection.hair_select`) and the demo
prior's CLIP (:mod:`headgen.prior.demo.clip`), whose text embedding of a prompt is its target drawn
exactly as candidates are drawn.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.cameras import Cameras
from headgen.errors import ConfigError
from headgen.geometry.mesh import Mesh, SurfaceGeometry
from headgen.prior.clip import ClipModel
from headgen.render.mesh_renderer import MeshRenderer

DEFAULT_VIEWS: list[tuple[float, float]] = [(0.0, 0.0), (0.0, 45.0), (0.0, -45.0)]
"""(elevation, azimuth) in degrees: front, left 3/4 (the subject's left is +azimuth), right 3/4."""
DEFAULT_LIGHTS = 10
"""Directional lights per view in CLIP selection (a key light plus a spiral within 60 degrees)."""
DEFAULT_DISTANCE = 2.7
"""Camera distance in head heights."""
DEFAULT_FOVY = 30.0
"""Vertical field of view in degrees."""
LIGHT_COLOR, LIGHT_AMBIENT, SHADING_ALBEDO = 0.7, 0.3, 0.8


def light_directions(count: int) -> Tensor:
    """[count, 3] unit directions in camera space (+z points back toward the camera): a key light
    from the camera, then a golden-angle spiral within 60 degrees of it."""
    dirs = []
    for j in range(count):
        theta = math.radians(60.0) * math.sqrt(j / (count - 1)) if count > 1 else 0.0
        phi = j * math.radians(137.50776)
        dirs.append([math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), math.cos(theta)])
    return torch.tensor(dirs, dtype=torch.float32)


class GeometryImager:
    """Bare-geometry images of a head from fixed views under camera-relative directional lights:
    ``[len(views) * lights, H, W, 3]`` (view-major), grey Lambert shading over white. Extra surfaces
    (``parts``, e.g. hair) share the depth buffer and are shaded in their own albedo."""

    label = "clip-select"
    """Which selector the errors name."""

    def __init__(self, views: Sequence[tuple[float, float]], lights: int, resolution: int,
                 distance: float = DEFAULT_DISTANCE, fovy: float = DEFAULT_FOVY, antialias: bool = False,
                 backend: str = "auto", device: torch.device | str = "cpu"):
        if not views:
            raise ConfigError(f"{self.label}: views must name at least one (elevation, azimuth) view")
        if lights < 1:
            raise ConfigError(f"{self.label}: lights must be >= 1, got {lights}")
        self.device = torch.device(device)
        n = len(views)
        el = torch.tensor([float(v[0]) for v in views])
        az = torch.tensor([float(v[1]) for v in views])
        self.cameras = Cameras.from_spherical(el, az, torch.full((n,), distance), torch.full((n,), fovy),
                                              resolution).to(self.device)
        # A head seen from outside: back faces never show, and culling them is about 40% of the
        # torch rasterizer's time, the pool's main cost (ICT-FaceKit at 224 px: 12.7 -> 7.3 ms a view).
        rcfg = MeshRenderer.Config(resolution=resolution, backend=backend,  # type: ignore[arg-type]
                                   antialias=antialias, background="white", cull_backfaces=True)
        self.renderer = MeshRenderer(rcfg)
        rot = self.cameras.c2w[:, :3, :3]
        # [views, lights, 3] world-space directions toward each light
        self.light_dirs = torch.einsum("vij,lj->vli", rot, light_directions(lights).to(self.device))
        self.num_images = n * lights
        self.key = json.dumps({"views": [[float(x) for x in v] for v in views], "lights": lights,
                               "resolution": resolution, "distance": distance, "fovy": fovy,
                               "antialias": antialias, "backend": self.backend_name(),
                               "cull_backfaces": True})  # for cache keys

    def backend_name(self) -> str:
        return self.renderer.backend_for(self.device).name

    @torch.no_grad()
    def images(self, vertices: Tensor, faces: Tensor, parts: list[SurfaceGeometry] | None = None) -> Tensor:
        """``parts`` None: the bare head (no albedo pass); a list (even empty): the head in grey and
        the parts in their own albedo, one depth buffer."""
        dev = self.device
        mesh = Mesh(vertices.to(dev), faces.to(dev))
        if parts is None:
            out = self.renderer.render(mesh, self.cameras, None, modes=("normal", "opacity"))
            albedo = torch.full((1, 1, 1, 1), SHADING_ALBEDO, device=dev)
        else:
            grey = torch.full((3,), SHADING_ALBEDO, device=dev)
            geometry = SurfaceGeometry(mesh, base_color=grey, parts=[p.to(dev) for p in parts])
            out = self.renderer.render(geometry, self.cameras, None, modes=("albedo", "normal", "opacity"))
            albedo = out["albedo"]
        cover = out["opacity"]  # [V,H,W,1]
        normal = F.normalize(out["normal"] * 2 - cover, dim=-1, eps=1e-12)
        ndotl = torch.einsum("vhwc,vlc->vlhw", normal, self.light_dirs).clamp_min(0)[..., None]
        shade = (albedo[:, None] * (LIGHT_AMBIENT + LIGHT_COLOR * ndotl)).clamp(0, 1)
        img = shade * cover[:, None] + (1 - cover[:, None])
        return img.expand(-1, -1, -1, -1, 3).flatten(0, 1)


def cat_images(images: Sequence[Tensor]) -> Tensor:
    """Concatenate [n, H, W, 3] image batches, keeping grey images (channels expanded from one, as
    :class:`GeometryImager` returns them) expanded: materialising three equal channels would triple
    the pool's largest tensor (a 16-candidate batch at 224 px: 860 MB) and the time spent on it."""
    if all(x.stride(-1) == 0 for x in images):
        return torch.cat([x[..., :1] for x in images]).expand(-1, -1, -1, 3)
    return torch.cat(list(images))


def mean_embedding(clip: ClipModel, images: Tensor, per_head: int) -> Tensor:
    """[N, D]: the renormalised mean CLIP embedding of each head's ``per_head`` consecutive images."""
    emb = clip.image_embeddings(images)
    return F.normalize(emb.view(-1, per_head, emb.shape[-1]).mean(1), dim=-1)


def selection_embedding(clip: ClipModel, vertices: Tensor, faces: Tensor, imager: GeometryImager) -> Tensor:
    """[D] the selection embedding of one head, computed exactly as a pool candidate's."""
    return mean_embedding(clip, imager.images(vertices, faces), imager.num_images)[0]
