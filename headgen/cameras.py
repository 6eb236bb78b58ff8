"""Cameras and lights: the batch of views a renderer draws.

Conventions (shared by every renderer, head model and landmark code):

* World space is y-up; a head looks toward +z, so the subject's left is +x.
* A camera at elevation ``el``, azimuth ``az`` (degrees) and distance ``d`` sits at
  ``d * (cos(el) sin(az), sin(el), cos(el) cos(az))`` looking at the origin: azimuth 0 is the
  front view, +90 looks at the subject's left side, +-180 at the back.
* ``c2w`` is camera-to-world in the OpenGL convention (the camera looks down its -z, +y is up).
* Image row 0 is the top of the picture.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor


def look_at(eye: Tensor, target: Tensor | None = None, up: Tensor | None = None) -> Tensor:
    """Camera-to-world matrices [B,4,4] (OpenGL) for cameras at ``eye`` [B,3] looking at ``target``."""
    eye = eye.float()
    if target is None:
        target = torch.zeros_like(eye)
    if up is None:
        up = torch.tensor([0.0, 1.0, 0.0], device=eye.device).expand_as(eye)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.cross(forward, up, dim=-1)
    # Straight up/down views: any right vector orthogonal to forward will do.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    alt = torch.cross(forward, torch.tensor([0.0, 0.0, -1.0], device=eye.device).expand_as(eye), dim=-1)
    right = torch.nn.functional.normalize(torch.where(degenerate, alt, right), dim=-1)
    true_up = torch.cross(right, forward, dim=-1)
    c2w = torch.eye(4, device=eye.device).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = true_up
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = eye
    return c2w


def spherical_to_position(elevation: Tensor, azimuth: Tensor, distance: Tensor) -> Tensor:
    """Positions [B,3] from elevation/azimuth in degrees and distance (see module conventions)."""
    el = torch.deg2rad(elevation.float())
    az = torch.deg2rad(azimuth.float())
    return torch.stack(
        [distance * torch.cos(el) * torch.sin(az), distance * torch.sin(el), distance * torch.cos(el) * torch.cos(az)],
        dim=-1,
    )


def perspective(fovy: Tensor, aspect: float, near: float, far: float) -> Tensor:
    """OpenGL projection matrices [B,4,4] for vertical field of view ``fovy`` (radians)."""
    f = 1.0 / torch.tan(fovy.float() / 2)
    proj = torch.zeros(fovy.shape[0], 4, 4, device=fovy.device)
    proj[:, 0, 0] = f / aspect
    proj[:, 1, 1] = f
    proj[:, 2, 2] = -(far + near) / (far - near)
    proj[:, 2, 3] = -2.0 * far * near / (far - near)
    proj[:, 3, 2] = -1.0
    return proj


@dataclass
class Cameras:
    """A batch of B pinhole cameras sharing one image size."""

    c2w: Tensor
    """[B,4,4] camera-to-world (OpenGL)."""
    fovy: Tensor
    """[B] vertical field of view, radians."""
    height: int
    width: int
    elevation: Tensor
    """[B] degrees (kept for view labels, prompts and landmark rules)."""
    azimuth: Tensor
    """[B] degrees in (-180, 180]."""
    distance: Tensor
    """[B] distance to the look-at point."""
    near: float = 0.01
    far: float = 100.0

    @classmethod
    def from_spherical(
        cls,
        elevation: Tensor,
        azimuth: Tensor,
        distance: Tensor,
        fovy_deg: Tensor,
        height: int,
        width: int | None = None,
        target: Tensor | None = None,
    ) -> Cameras:
        eye = spherical_to_position(elevation, azimuth, distance)
        tgt = None if target is None else target.expand_as(eye)
        if tgt is not None:
            eye = eye + tgt
        return cls(
            c2w=look_at(eye, tgt),
            fovy=torch.deg2rad(fovy_deg.float()),
            height=height,
            width=width or height,
            elevation=elevation.float(),
            azimuth=wrap_azimuth(azimuth.float()),
            distance=distance.float(),
        )

    @property
    def batch_size(self) -> int:
        return self.c2w.shape[0]

    @property
    def position(self) -> Tensor:
        return self.c2w[:, :3, 3]

    def w2c(self) -> Tensor:
        return torch.linalg.inv(self.c2w)

    def proj(self) -> Tensor:
        return perspective(self.fovy, self.width / self.height, self.near, self.far)

    def mvp(self) -> Tensor:
        """World-to-clip matrices [B,4,4]."""
        return self.proj() @ self.w2c()

    def to(self, device: torch.device | str) -> Cameras:
        return replace(
            self,
            c2w=self.c2w.to(device),
            fovy=self.fovy.to(device),
            elevation=self.elevation.to(device),
            azimuth=self.azimuth.to(device),
            distance=self.distance.to(device),
        )

    def __getitem__(self, idx: int | slice | Tensor) -> Cameras:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return replace(
            self,
            c2w=self.c2w[idx],
            fovy=self.fovy[idx],
            elevation=self.elevation[idx],
            azimuth=self.azimuth[idx],
            distance=self.distance[idx],
        )


def wrap_azimuth(azimuth: Tensor) -> Tensor:
    """Azimuth wrapped to (-180, 180]."""
    return 180.0 - torch.remainder(180.0 - azimuth, 360.0)


@dataclass
class Lights:
    """A batch of B directional lights plus ambient."""

    direction: Tensor
    """[B,3] unit vectors pointing from the surface toward the light (world space)."""
    color: Tensor
    """[B,3] diffuse intensity."""
    ambient: Tensor
    """[B,3] ambient intensity."""

    @classmethod
    def headlight(cls, cameras: Cameras, strength: float = 0.7, ambient: float = 0.3) -> Lights:
        d = torch.nn.functional.normalize(cameras.position, dim=-1)
        b = cameras.batch_size
        dev = d.device
        return cls(d, torch.full((b, 3), strength, device=dev), torch.full((b, 3), ambient, device=dev))

    def to(self, device: torch.device | str) -> Lights:
        return Lights(self.direction.to(device), self.color.to(device), self.ambient.to(device))


def fov_to_focal(fovy: Tensor, height: int) -> Tensor:
    """Focal length in pixels for a vertical field of view in radians."""
    return 0.5 * height / torch.tan(0.5 * fovy)


__all__ = [
    "Cameras",
    "Lights",
    "fov_to_focal",
    "look_at",
    "perspective",
    "spherical_to_position",
    "wrap_azimuth",
]


def pixel_rays(
    cameras: Cameras, height: int | None = None, width: int | None = None
) -> tuple[Tensor, Tensor]:
    """World-space rays through pixel centres: origins and unit directions, each [B,H,W,3].

    Row 0 is the top of the image; the camera looks down its -z (OpenGL). ``height``/``width``
    default to the cameras' image size; another size keeps the same vertical field of view.
    """
    h = height or cameras.height
    w = width or cameras.width
    dev = cameras.c2w.device
    focal = fov_to_focal(cameras.fovy.to(dev), h)  # [B], pixels
    cols = torch.arange(w, device=dev, dtype=torch.float32) + 0.5 - w / 2
    rows = torch.arange(h, device=dev, dtype=torch.float32) + 0.5 - h / 2
    x = cols[None, None, :].expand(-1, h, -1) / focal[:, None, None]
    y = -rows[None, :, None].expand(-1, -1, w) / focal[:, None, None]
    d_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # [B,H,W,3]
    rot = cameras.c2w[:, :3, :3]
    d_world = torch.nn.functional.normalize(torch.einsum("bij,bhwj->bhwi", rot, d_cam), dim=-1)
    origins = cameras.c2w[:, None, None, :3, 3].expand_as(d_world)
    return origins, d_world


__all__ += ["pixel_rays"]
