"""What the demo prior knows: the head model, the run's targets, the unconditional bank, and how
its data (renders of targets at the batch's cameras) are made.

Data, per sample of a batch, as latents of the same shape as the guided latents:

* ``rgb`` / ``latent`` (latent rendering): the target rendered at the sample's camera under a few
  lights: the light the sample was rendered under (when known, the prior "sees" the lighting as
  it sees the camera) and lights fixed relative to the camera, encoded by the linear autoencoder;
* ``normal``: the target's normal map at the camera, encoded;
* ``normal_opacity`` (latent space): [normal * 2 - 1, opacity] at latent resolution;
* ``uv_albedo`` (texture prior): the target's UV albedo, encoded (camera independent).

Images are rendered at ``supersample`` (2) x the latent resolution and encoded at that factor
(:meth:`~headgen.prior.demo.autoencoder.LinearAutoencoder.encode_data`), standing in for the
encoding of a full-resolution render so data cost stays small on CPU. Measured on renders of the
built-in head at three views: the latents of a 128 px render encoded at factor 2 are within 2.4%
(smooth autoencoder; 3.2% block) relative error of those of the 512 px render encoded at 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.cameras import Cameras, Lights
from headgen.config.demo import DemoSettings
from headgen.errors import HeadgenError
from headgen.prior.demo.autoencoder import AUTOENCODERS, LinearAutoencoder
from headgen.prior.demo.targets import BANK_PROMPTS, DemoTarget, TexelMaps, make_target, texel_maps
from headgen.prior.demo.views import CellCache, cell_cameras, in_sector, look_target, sample_cells
from headgen.render.mesh_renderer import MeshRenderer

CAMERA_FREE_KEYS = frozenset({"uv_albedo"})
"""Data keys whose images do not depend on the camera (UV space): never view-ambiguous."""


def camera_lights(cameras: Cameras, count: int) -> list[Lights]:
    """``count`` directional lights fixed relative to each camera: a key light from the camera,
    then lights swung +-40 degrees around the vertical axis and raised 25 degrees."""
    pos = F.normalize(cameras.position, dim=-1)
    out = []
    angles = [0.0, 40.0, -40.0, 80.0, -80.0][:count]
    for i, deg in enumerate(angles):
        a = math.radians(deg)
        rot = torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
        d = pos @ rot.T.to(pos)
        if i > 0:
            d = F.normalize(d + torch.tensor([0.0, 0.45, 0.0], device=d.device), dim=-1)
        n = cameras.batch_size
        out.append(Lights(d, torch.full((n, 3), 0.7, device=d.device), torch.full((n, 3), 0.3, device=d.device)))
    return out


class DemoWorld:
    """The demo prior's knowledge for one run (one per run, shared by all its backbones)."""

    def __init__(self, head: Any, prompt: str, edit_prompt: str | None = None, settings: DemoSettings | None = None,
                 device: torch.device | str = "cpu"):
        self.head = head
        self.settings = settings or DemoSettings()
        self.device = torch.device(device)
        self.maps: TexelMaps = texel_maps(head, self.settings.texture_size)
        if self.settings.autoencoder not in AUTOENCODERS:
            raise HeadgenError(f"demo autoencoder '{self.settings.autoencoder}': use one of {', '.join(AUTOENCODERS)}")
        self.ae: LinearAutoencoder = AUTOENCODERS[self.settings.autoencoder](self.device)
        self.prompt = prompt
        self._targets: dict[tuple[str, str | None], DemoTarget] = {}
        self.target = self.target_for(prompt)
        own = [self.target]
        if edit_prompt:
            own.append(self.target_for(prompt, edit_prompt))
        if self.settings.bank_size > len(BANK_PROMPTS):
            raise HeadgenError(f"demo prior bank_size is at most {len(BANK_PROMPTS)}")
        self.bank = [self.target_for(p) for p in BANK_PROMPTS[: self.settings.bank_size]] + own
        self._renderers: dict[int, MeshRenderer] = {}
        if self.settings.views not in ("exact", "ambiguous"):
            raise HeadgenError(f"demo views '{self.settings.views}': use exact or ambiguous")
        self.cells = CellCache(self.settings.cache_mb)
        self._reader: Any = None
        self._uv_latents: dict[tuple[str, int], Tensor] = {}
        self._render_reader: Any = None

    @classmethod
    def for_run(cls, ctx: Any) -> DemoWorld:
        world = ctx.state.get("demo_world")
        if world is None:
            cfg = ctx.config
            world = cls(ctx.head, cfg.prompt, cfg.edit_prompt or None, settings=cfg.demo, device=ctx.device)
            ctx.state["demo_world"] = world
        return world

    def target_for(self, subject: str, edit: str | None = None) -> DemoTarget:
        key = (subject, edit or None)
        if key not in self._targets:
            self._targets[key] = make_target(subject, self.head, self.maps, edit=edit)
        return self._targets[key]

    def targets_for(self, subject: str | None, edit: str | None) -> list[DemoTarget]:
        """The data set of a branch: its (edited) target, or the bank when unconditional."""
        if subject is None:
            return self.bank
        return [self.target_for(subject, edit)]

    # ------------------------------------------------------------------ data
    def renderer(self, size: int) -> MeshRenderer:
        if size not in self._renderers:
            # Supersampling already smooths the data; edge antialiasing (for gradients) is not needed.
            self._renderers[size] = MeshRenderer(
                MeshRenderer.Config(resolution=size, background="white", antialias=False)
            )
        return self._renderers[size]

    @torch.no_grad()
    def images(self, target: DemoTarget, cameras: Cameras, key: str, size: int, lights: Lights | None = None) -> Tensor:
        """[B, M, size*ss, size*ss, C] data images of ``target`` (M = lights for shaded keys, else 1;
        ss = the supersampling factor)."""
        surface = target.surface(self.head, self.device)
        ss = self.settings.supersample
        r = self.renderer(size * ss)
        if key in ("rgb", "latent"):
            # One rasterisation, shaded under every light: the mesh renderer's rgb formula,
            # albedo * (ambient + color * max(0, n.l)), over a white background.
            out = r.render(surface, cameras, None, modes=("albedo", "normal", "opacity"))
            cover = out["opacity"]
            normal = F.normalize(out["normal"] * 2 - cover, dim=-1)
            shaded = []
            all_lights = camera_lights(cameras, self.settings.lights)
            if lights is not None:
                all_lights = [lights.to(cover.device)] + all_lights[: max(0, self.settings.lights - 1)]
            for light in all_lights:
                ndotl = (normal * light.direction[:, None, None, :]).sum(-1, keepdim=True).clamp_min(0)
                shade = light.ambient[:, None, None, :] + light.color[:, None, None, :] * ndotl
                rgb = (out["albedo"] * shade).clamp(0, 1)
                shaded.append(rgb * cover + (1 - cover))
            img = torch.stack(shaded, dim=1)
        elif key in ("normal", "normal_opacity"):
            out = r.render(surface, cameras, None, modes=("normal", "opacity"))
            if key == "normal":
                img = out["normal"]
            else:
                img = torch.cat([out["normal"] * 2 - out["opacity"], out["opacity"]], -1)
            img = img[:, None]
        elif key == "albedo":
            img = r.render(surface, cameras, None, modes=(key,))[key][:, None]
        elif key == "shading":  # bare geometry under the sample's own light (a headlight when unknown)
            light = lights.to(surface.mesh.v_pos.device) if lights is not None else None
            img = r.render(surface, cameras, light, modes=(key,))[key][:, None]
        else:
            raise HeadgenError(f"the demo prior cannot model renders of '{key}'")
        return img

    def data(self, targets: list[DemoTarget], views: Any, h: int, w: int, cache: dict | None = None) -> Tensor:
        """[B, M_total, D] latent data for each sample (D = C*h*w flattened like the latents)."""
        if h != w:
            raise HeadgenError("the demo prior needs square latents")
        cache = {} if cache is None else cache
        parts = []
        for target in targets:
            ck = (target.name, views.image_key)
            if ck not in cache:
                cache[ck] = self._latents(target, views, h)
            parts.append(cache[ck])
        return torch.cat(parts, dim=1)

    def branch_data(self, targets: list[DemoTarget], views: Any, h: int, labels: list[str | None] | None,
                    modes: list[str], inferred: Cameras | None = None, cache: dict | None = None,
                    exact: bool = True) -> list[Tensor]:
        """Per sample, [M_i, D] latent data of a branch under ambiguous views, by the sample's mode:
        ``exact``: at its own camera (as :meth:`data`); ``inferred``: at the camera ``inferred``
        holds for it (read from its landmark map); ``text``: at its camera when its text's sector
        allows it, plus the sector's cached cells (``labels``: the view each sample's text names);
        ``exact=False`` (the bank): ``text`` samples hold the cached grid cells only."""
        cache = {} if cache is None else cache
        cams = views.cameras
        labels_or_none = labels if labels is not None else [None] * cams.batch_size
        needs_exact = any(m == "exact" or (m == "text" and exact and in_sector(lab, float(a)))
                          for m, lab, a in zip(modes, labels_or_none, cams.azimuth.tolist()))
        exact_all = self.data(targets, views, h, h, cache) if needs_exact else None
        inferred_all = None
        if inferred is not None and "inferred" in modes:
            key = ("inferred", tuple(round(float(v), 4) for v in torch.cat([inferred.azimuth, inferred.elevation])))
            inferred_all = self.data(targets, _CellViews(inferred, views.image_key, views.lights), h, h,
                                     cache.setdefault(key, {}))
        look = look_target(cams)
        out = []
        for i in range(cams.batch_size):
            if modes[i] == "exact":
                out.append(exact_all[i])
                continue
            if modes[i] == "inferred":
                out.append(inferred_all[i])
                continue
            own, cells = sample_cells(cams, i, labels[i] if labels is not None else None, exact)
            parts = [exact_all[i]] if own else []
            if cells:
                parts += [self._cell_latents(t, views.image_key, h, look[i], cells) for t in targets]
            out.append(torch.cat(parts, 0))
        return out

    def render_reader(self) -> Any:
        """The InstructPix2Pix analogue's reader of source renders (templates: the source target,
        lit by a key light from the camera, white background)."""
        if self._render_reader is None:
            from headgen.prior.demo.camera_reader import SIZE, RenderCameraReader

            ss = self.settings.supersample
            source = self.target

            def render(cams: Cameras) -> Tensor:
                return self.images(source, cams.to(self.device), "rgb", SIZE // ss)[:, 0].cpu()  # key light

            self._render_reader = RenderCameraReader(render)
        return self._render_reader

    def camera_reader(self) -> Any:
        """The landmark-ControlNet analogue's reader of landmark maps (templates of this head)."""
        if self._reader is None:
            from headgen.prior.demo.camera_reader import LandmarkCameraReader

            self._reader = LandmarkCameraReader(self.head.landmarks_mediapipe())
        return self._reader

    def _cell_latents(self, target: DemoTarget, key: str, h: int, look: Tensor, cells: list) -> Tensor:
        """[len(cells) * M, D] latents of ``target`` at ``cells`` (rendered once, then cached)."""
        where = tuple(round(float(v), 3) for v in look)
        got = {c: self.cells.lookup((target.name, key, h, where, c)) for c in cells}
        missing = [c for c in cells if got[c] is None]
        if missing:
            z = self._latents(target, _CellViews(cell_cameras(missing, look, h), key), h)  # [n, M, D]
            for c, zc in zip(missing, z):
                self.cells.put((target.name, key, h, where, c), zc)
                got[c] = zc
        return torch.cat([got[c] for c in cells], 0)

    def _latents(self, target: DemoTarget, views: Any, h: int) -> Tensor:
        key = views.image_key
        if key in CAMERA_FREE_KEYS:  # encoded once per target and size
            if (target.name, h) not in self._uv_latents:
                tex = target.albedo.to(self.device)[None]
                if tex.shape[1] % h == 0:
                    z = self.ae.encode_data(tex, tex.shape[1] // h)
                else:  # a latent size the texture is no multiple of: area-resample, then the channel map
                    small = F.adaptive_avg_pool2d(tex.permute(0, 3, 1, 2), h).permute(0, 2, 3, 1)
                    z = self.ae.encode_data(small, 1)
                self._uv_latents[(target.name, h)] = z.flatten(1)
            b = views.cameras.batch_size if views.cameras is not None else 1
            return self._uv_latents[(target.name, h)][:, None].expand(b, 1, -1)
        imgs = self.images(target, views.cameras, key, h, getattr(views, "lights", None))
        b, m = imgs.shape[:2]
        ss = self.settings.supersample
        if key == "normal_opacity":  # rendered in latent space: no autoencoder, an area average
            z = imgs.flatten(0, 1).permute(0, 3, 1, 2)
            z = F.avg_pool2d(z, ss) if ss > 1 else z
        else:
            z = self.ae.encode_data(imgs.flatten(0, 1), ss)
        return z.reshape(b, m, -1)


@dataclass
class _CellViews:
    """What :meth:`DemoWorld._latents` reads of a ViewInfo, for cell renders (camera-fixed lights)."""

    cameras: Cameras
    image_key: str
    lights: Lights | None = None
