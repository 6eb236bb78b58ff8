"""Demo-prior targets: a prompt maps deterministically to a head of the built-in model.

A target is identity coefficients (seeded by the prompt) and a UV albedo painted from a few
features (skin, hair, beard, lips, brows, eyes) that a small keyword table steers ("old",
"beard", "pale", "bald", "blonde", ...). An edit instruction applies the keyword table to a
copy of a target, keeping its identity. The same text always gives the same target.

A target also has a hairstyle, named after the built-in hair library's styles (short, bob,
long, bun, mohawk, or none), for hair selection (the demo CLIP draws the target with it; the
painted albedo and the diffusion data do not change). Keywords: "short hair", "crew cut", "buzz
cut", "pixie" -> short; "bob" -> bob; "long hair", "ponytail" -> long; "bun", "top knot" -> bun;
"mohawk" -> mohawk; "bald", "shaved head" -> none. A prompt that names none gets long hair when it
says woman/female/lady/girl, else short.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from headgen.geometry.mesh import Mesh, SurfaceGeometry
from headgen.hair.colours import PRESET_COLOURS
from headgen.prior.demo.views import CellCache

SKIN_TONES = [(0.93, 0.78, 0.68), (0.86, 0.67, 0.55), (0.76, 0.57, 0.44), (0.60, 0.42, 0.31), (0.42, 0.29, 0.21)]
HAIR_COLOURS = PRESET_COLOURS
"""The hair selector's preset colours (:mod:`headgen.hair.colours`), which the targets' hair uses."""

# keyword -> feature changes (applied in order of appearance in the table)
KEYWORDS: dict[str, dict[str, Any]] = {
    r"\b(old|older|elderly|aged|grandfather|grandmother|senior)\b": {"age": 1.0, "hair": "grey"},
    r"\b(young|teen|teenage|child|boy|girl)\b": {"age": 0.0},
    r"\b(beard|bearded)\b": {"beard": 1.0},
    r"\b(moustache|mustache)\b": {"moustache": 1.0},
    r"\b(clean[- ]shaven|woman|female|lady)\b": {"beard": 0.0, "moustache": 0.0},
    r"\b(bald|shaved head)\b": {"bald": True},
    r"\b(pale|fair[- ]skinned)\b": {"skin": 0},
    r"\b(tan|tanned|olive)\b": {"skin": 2},
    r"\b(dark[- ]skinned|dark skin|black man|black woman|african)\b": {"skin": 4},
    r"\b(blonde|blond)\b": {"hair": "blonde"},
    r"\b(red[- ]haired|red hair|ginger|redhead)\b": {"hair": "red"},
    r"\b(grey|gray)[- ]hair": {"hair": "grey"},
    r"\bwhite[- ]hair": {"hair": "white"},
    r"\bblack[- ]hair": {"hair": "black"},
    r"\bbrown[- ]hair": {"hair": "brown"},
    r"\b(lipstick|red lips)\b": {"lips": (0.72, 0.12, 0.16)},
    r"\b(grey|gray) beard": {"beard": 1.0, "beard_colour": "grey"},
    r"\bwhite beard": {"beard": 1.0, "beard_colour": "white"},
    # hairstyles (names of the built-in hair library); bald/shaved head -> none, see apply_keywords
    r"\b(woman|female|lady|girl|grandmother)\b": {"hairstyle": "long"},
    r"\b(short[- ]haired|short hair|crew[- ]cut|buzz[- ]cut|crop(ped)? hair|pixie)\b": {"hairstyle": "short"},
    r"\b(bob|bobbed)\b": {"hairstyle": "bob"},
    r"\b(long[- ]haired|long hair|ponytail)\b": {"hairstyle": "long"},
    r"\b(bun|top[- ]?knot)\b": {"hairstyle": "bun"},
    r"\b(mohawk|mohican)\b": {"hairstyle": "mohawk"},
}
HAIRSTYLES = ("short", "bob", "long", "bun", "mohawk", "none")
"""The hairstyles targets can have (the built-in hair library's, and none)."""

BANK_PROMPTS = [
    "a young woman with blonde hair", "an old man with a grey beard", "a bald man with dark skin",
    "a pale young man with red hair", "a woman with black hair and red lipstick", "a tanned man with a moustache",
    "an elderly woman with white hair", "a young man with brown hair", "a bearded man with black hair",
    "a dark-skinned woman with black hair", "a teenage boy with blonde hair", "an old bald man",
    "a woman with brown hair", "a man with a white beard", "a redhead woman, pale", "a young man, clean-shaven",
]


@dataclass
class TargetSpec:
    """The features a text maps to (readable, stored in summaries)."""

    seed: int
    skin: int = 1
    hair: str = "brown"
    beard_colour: str | None = None
    bald: bool = False
    beard: float = 0.0
    moustache: float = 0.0
    age: float = 0.3
    lips: tuple[float, float, float] = (0.66, 0.36, 0.34)
    hairstyle: str = "short"
    """One of HAIRSTYLES; "none" whenever ``bald``."""
    keywords: list[str] = field(default_factory=list)


def _seed(text: str) -> int:
    norm = " ".join(text.lower().split())
    return int.from_bytes(hashlib.sha256(norm.encode()).digest()[:8], "little") % (2**62)


def apply_keywords(spec: TargetSpec, text: str) -> TargetSpec:
    spec = replace(spec, keywords=list(spec.keywords))
    low = text.lower()
    for pattern, changes in KEYWORDS.items():
        if re.search(pattern, low):
            spec.keywords.append(re.search(pattern, low).group(0))
            for key, value in changes.items():
                setattr(spec, key, value)
    if spec.bald:
        spec.hairstyle = "none"
    return spec


def spec_for(text: str) -> TargetSpec:
    seed = _seed(text)
    rng = np.random.default_rng(seed)
    base = TargetSpec(seed=seed, skin=int(rng.integers(0, 4)), hair=str(rng.choice(["black", "brown", "blonde"])),
                      beard=float(rng.random() < 0.3), age=float(rng.uniform(0.1, 0.6)))
    return apply_keywords(base, text)


@dataclass
class DemoTarget:
    """A known head: identity coefficients + painted UV albedo."""

    name: str
    spec: TargetSpec
    beta: Tensor
    albedo: Tensor
    """[T,T,3] in [0,1], the head model's UV layout."""
    _surface: SurfaceGeometry | None = field(default=None, repr=False)

    def vertices(self, head: Any) -> Tensor:
        return head.vertices(self.beta)

    def surface(self, head: Any, device: torch.device | str = "cpu") -> SurfaceGeometry:
        if self._surface is None or self._surface.mesh.v_pos.device != torch.device(device):
            v = self.vertices(head)
            mesh = Mesh(v, head.faces, head.uvs, head.uv_faces)
            # with the head model's attached parts (ICT-FaceKit's eyes and teeth), as the results draw them
            self._surface = SurfaceGeometry(mesh, albedo_map=self.albedo, parts=head.part_surfaces(v)).to(device)
        return self._surface


def make_target(
    text: str, head: Any, maps: TexelMaps, edit: str | None = None, identity_scale: float = 0.8
) -> DemoTarget:
    spec = spec_for(text)
    if edit:
        spec = apply_keywords(spec, edit)
    g = torch.Generator().manual_seed(spec.seed % (2**31))
    beta = identity_scale * torch.randn(head.num_identity, generator=g)
    name = text if not edit else f"{text} | edit: {edit}"
    return DemoTarget(name=name, spec=spec, beta=beta, albedo=painted_albedo(spec, maps))


# ---------------------------------------------------------------------------------------- painting
@dataclass
class TexelMaps:
    """Per-texel data of a head's UV layout: 3D position on the template and region weights."""

    position: Tensor
    """[T,T,3] template position of each texel (0 outside the layout)."""
    covered: Tensor
    """[T,T] bool."""
    regions: dict[str, Tensor]
    """Region name -> [T,T] weight in [0,1]."""
    landmarks: Tensor
    """[478,3] MediaPipe landmarks of the template (NaN where not embedded)."""
    eyeballs: bool = False
    """The head has eyeballs of its own (ICT-FaceKit's parts): the albedo paints no eyes."""

    def digest(self) -> str:
        """A digest of everything painting reads (computed once)."""
        if not hasattr(self, "_digest"):
            from headgen.digest import tensors_sha256

            tensors = {"position": self.position, "covered": self.covered, "landmarks": self.landmarks,
                       **{f"region/{k}": v for k, v in self.regions.items()}}
            self._digest = f"{tensors_sha256(tensors)}:{self.eyeballs}"
        return self._digest


def texel_maps(head: Any, size: int) -> TexelMaps:
    """Rasterise the UV layout and interpolate template positions and region masks into it."""
    from headgen.render.raster import get_backend

    backend = get_backend("torch", torch.device("cpu"))
    uv = head.uvs.float()
    tri_uv = head.uv_faces.long()
    tri_pos = head.faces.long()
    corners = tri_uv.reshape(-1)
    clip = torch.cat([uv[corners] * 2 - 1, torch.zeros(len(corners), 1), torch.ones(len(corners), 1)], -1)
    tri = torch.arange(len(corners)).view(-1, 3)
    rast, _ = backend.rasterize(clip[None], tri, (size, size))
    names = sorted(head.regions)
    attrs = [head.v_template.float()] + [head.regions[n].float()[:, None] for n in names]
    per_vertex = torch.cat(attrs, -1)
    values = backend.interpolate(per_vertex[tri_pos.reshape(-1)][None], rast, tri)[0]
    covered = rast[0, ..., 3] > 0
    regions = {n: values[..., 3 + i] * covered for i, n in enumerate(names)}
    eyeballs = any(p.name.startswith("eyeball") for p in getattr(head, "parts", []))
    return TexelMaps(values[..., :3] * covered[..., None], covered, regions, head.landmarks_mediapipe().float(),
                     eyeballs)


def _inside(points_xy: np.ndarray, polygon_xy: np.ndarray) -> np.ndarray:
    from matplotlib.path import Path

    return Path(polygon_xy).contains_points(points_xy)


def _contour(lm: Tensor, ids: list[int]) -> np.ndarray:
    pts = lm[ids].numpy()
    return pts[~np.isnan(pts).any(-1)]


def contour_loops(edges: list[tuple[int, int]]) -> list[list[int]]:
    """Closed loops (vertex ids in order) formed by a contour's connection list."""
    nbrs: dict[int, list[int]] = {}
    for s, e in edges:
        nbrs.setdefault(s, []).append(e)
        nbrs.setdefault(e, []).append(s)
    seen: set[int] = set()
    loops = []
    for start in nbrs:
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in nbrs[cur] if n != prev and (n not in seen or (n == start and len(loop) > 2))]
            if not nxt or nxt[0] == start:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(loop)
    return loops


def _outer_loop(edges: list[tuple[int, int]], lm: Tensor) -> list[int]:
    loops = [[i for i in loop if not torch.isnan(lm[i]).any()] for loop in contour_loops(edges)]
    loops = [loop for loop in loops if len(loop) >= 3]
    if not loops:
        return []

    def extent(loop: list[int]) -> float:
        pts = lm[loop, :2]
        return float((pts.max(0).values - pts.min(0).values).prod())

    return max(loops, key=extent)


_PAINTED = CellCache(budget_mb=160.0)  # 3 MB albedos at 512 px: the bank (17) and a few runs' own targets


def painted_albedo(spec: TargetSpec, maps: TexelMaps) -> Tensor:
    """:func:`paint_albedo`, remembered in this process: every run's demo prior paints the same bank
    of targets (about 2.5 s for the 18 of a run), and one process often makes many runs (tests, the
    bench's local launcher, the viewer)."""
    key = (maps.digest(), repr(spec))
    albedo = _PAINTED.lookup(key)
    if albedo is None:
        albedo = paint_albedo(spec, maps)
        _PAINTED.put(key, albedo)
    return albedo.clone()


def paint_albedo(spec: TargetSpec, maps: TexelMaps) -> Tensor:
    from headgen.render.landmarks import landmark_edges

    pos = maps.position
    lm = maps.landmarks
    x, y, z = pos[..., 0], pos[..., 1], pos[..., 2]
    skin = torch.tensor(SKIN_TONES[spec.skin])
    if spec.age > 0.7:  # older skin: a little paler and less saturated
        skin = 0.85 * skin + 0.15 * skin.mean()
    albedo = skin.expand(*pos.shape[:2], 3).clone()
    face = maps.regions.get("face", torch.zeros_like(x))
    scalp = maps.regions.get("scalp", torch.zeros_like(x))
    hair = torch.tensor(HAIR_COLOURS[spec.hair])
    if not spec.bald:
        w = scalp.clamp(0, 1) * (1 - 0.6 * face.clamp(0, 1))
        albedo = albedo * (1 - w[..., None]) + hair * w[..., None]
    front = (z > 0.1) & maps.covered
    flat = pos[..., :2].reshape(-1, 2).numpy()

    def mask(ids: list[int]) -> Tensor:
        poly = _contour(lm, ids)
        if len(poly) < 3:
            return torch.zeros_like(front)
        return torch.from_numpy(_inside(flat, poly[:, :2]).reshape(front.shape)) & front

    edges = landmark_edges()
    groups = {name: [c for e in pairs for c in e] for name, pairs in edges.items()}
    lips = mask(_outer_loop(edges["lips"], lm))
    beard_colour = torch.tensor(HAIR_COLOURS[spec.beard_colour or spec.hair])
    if spec.beard > 0:
        mouth_y = float(np.nanmean(lm[[61, 291], 1].numpy()))
        nose_y = float(lm[2, 1]) if not torch.isnan(lm[2, 1]) else mouth_y + 0.08
        jaw = front & (face > 0.5) & (y < nose_y - 0.02) & (y > -0.62) & ~lips
        cheek = (x.abs() > 0.12) & (y > mouth_y + 0.02)
        albedo[jaw & ~cheek] = 0.25 * albedo[jaw & ~cheek] + 0.75 * beard_colour * spec.beard
    elif spec.moustache > 0:
        mouth_y = float(np.nanmean(lm[[61, 291], 1].numpy()))
        stache = front & (y > mouth_y) & (y < mouth_y + 0.06) & (x.abs() < 0.09) & ~lips
        albedo[stache] = 0.2 * albedo[stache] + 0.8 * beard_colour
    albedo[lips] = torch.tensor(spec.lips)
    for brow in ("left_eyebrow", "right_eyebrow"):
        if brow in edges:
            # points densely along the brow's edges, so the painted brow is a stroke, not dots
            s = torch.linspace(0, 1, 8)[:, None]
            pts = torch.cat([lm[a] * (1 - s) + lm[b] * s for a, b in edges[brow]])
            pts = pts[~torch.isnan(pts).any(-1)]
            if len(pts):
                d = torch.cdist(pos.reshape(-1, 3), pts).min(-1).values.reshape(front.shape)
                albedo[(d < 0.018) & front] = 0.5 * hair + 0.1
    for eye, pupil in (("left_eye", 473), ("right_eye", 468)):
        if eye in groups and not maps.eyeballs:
            inside = mask(_outer_loop(edges[eye], lm))
            albedo[inside] = torch.tensor([0.92, 0.9, 0.88])
            if not torch.isnan(lm[pupil]).any():
                d = (pos - lm[pupil]).norm(dim=-1)
                albedo[inside & (d < 0.022)] = torch.tensor([0.25, 0.18, 0.12])
                albedo[inside & (d < 0.009)] = torch.tensor([0.03, 0.03, 0.03])
    if spec.age > 0.7:  # forehead lines
        lines = front & (face > 0.5) & (y > 0.2) & (y < 0.32) & (torch.sin(y * 220).abs() < 0.12)
        albedo[lines] *= 0.8
    return dilate(albedo.clamp(0, 1), maps.covered)


def dilate(image: Tensor, covered: Tensor) -> Tensor:
    """Texels outside the UV layout take their nearest covered texel's colour, so bilinear
    sampling at an island's edge (a seam) does not blend in the colour of the empty atlas."""
    if bool(covered.all()) or not bool(covered.any()):
        return image
    from scipy.ndimage import distance_transform_edt

    _, (rows, cols) = distance_transform_edt(~covered.numpy(), return_indices=True)
    return image[torch.from_numpy(rows), torch.from_numpy(cols)]
