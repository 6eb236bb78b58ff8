"""Test-only parts registered from OUTSIDE the package (loaded with --plugin): a toy
representation fitted to a fixed target through the generic optimize stage."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from guidance.base import Guidance, GuidanceInput
from headgen.registry import register
from representations.base import Representation


@dataclass
class ToyViews:
    cameras: Tensor
    lights: None = None
    view_labels: tuple[str, ...] = ()

    def to(self, device):
        return ToyViews(self.cameras.to(device), None, self.view_labels)


@register("cameras", "toy-shift")
class ToyShiftCameras:
    """Random integer pixel shifts standing in for cameras (test only)."""

    @dataclass
    class Config:
        batch_size: int = 2
        max_shift: int = 3

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def sample(self, step: int, generator: torch.Generator) -> ToyViews:
        s = torch.randint(-self.cfg.max_shift, self.cfg.max_shift + 1, (self.cfg.batch_size, 2), generator=generator)
        return ToyViews(s, None, ("front",) * self.cfg.batch_size)


@register("renderer", "toy-roll")
class ToyRollRenderer:
    """Draws a toy image shifted by each 'camera' (test only)."""

    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def render(self, image: Tensor, cameras: Tensor, lights, modes, generator) -> dict[str, Tensor]:
        out = [torch.roll(image, shifts=(int(s[0]), int(s[1])), dims=(0, 1)) for s in cameras]
        return {"rgb": torch.stack(out)}


@register("representation", "toy-image")
class ToyImage(Representation):
    """A learnable H x W x 3 image (test only)."""

    @dataclass
    class Config:
        size: int = 16
        init: float = 0.5

    def __init__(self, cfg: Config, ctx):
        super().__init__(cfg, ctx)
        init = torch.full((cfg.size, cfg.size, 3), cfg.init)
        self.image = nn.Parameter(init + 0.01 * torch.randn(cfg.size, cfg.size, 3))

    def render_input(self) -> Tensor:
        return self.image

    def reg_smooth(self, step: int) -> Tensor:
        return (self.image[1:] - self.image[:-1]).pow(2).mean()


@register("representation", "toy-mesh")
class ToyMesh(ToyImage):
    """A toy image that is also the texture of a small UV-mapped grid mesh with learnable heights, so
    the OBJ exporter can write it (test only)."""

    @dataclass
    class Config:
        size: int = 16
        init: float = 0.5
        grid: int = 4
        """Vertices per side of the mesh."""

    def __init__(self, cfg: Config, ctx):
        super().__init__(cfg, ctx)
        self.heights = nn.Parameter(torch.zeros(cfg.grid * cfg.grid))

    def reg_bumps(self, step: int) -> Tensor:
        """Pull the heights toward a fixed bump so they change during a fit."""
        n = self.cfg.grid
        y, x = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
        return (self.heights - 0.3 * ((1 - x * x) * (1 - y * y)).reshape(-1)).pow(2).mean()

    def export_surface(self):
        from headgen.geometry.mesh import Mesh, SurfaceGeometry

        n = self.cfg.grid
        y, x = torch.meshgrid(torch.linspace(0, 1, n), torch.linspace(0, 1, n), indexing="ij")
        uv = torch.stack([x.reshape(-1), 1 - y.reshape(-1)], -1)
        pos = torch.stack([x.reshape(-1) - 0.5, 0.5 - y.reshape(-1), self.heights.detach()], -1)
        i = torch.arange(n * n).view(n, n)
        a, b, c, d = i[:-1, :-1].reshape(-1), i[:-1, 1:].reshape(-1), i[1:, :-1].reshape(-1), i[1:, 1:].reshape(-1)
        faces = torch.cat([torch.stack([a, c, b], -1), torch.stack([b, c, d], -1)])
        mesh = Mesh(v_pos=pos, t_pos_idx=faces, v_tex=uv)
        return SurfaceGeometry(mesh=mesh, albedo_map=self.image.detach().clamp(0, 1))


def toy_target(size: int) -> Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([x, y, 0.5 * (x + y)], dim=-1)


@register("guidance", "toy-target")
class ToyTargetGuidance(Guidance):
    """Pulls renders toward a fixed target image with noisy MSE (test only)."""

    @dataclass
    class Config:
        noise: float = 0.05
        sleep_s: float = 0.0
        """Seconds to sleep per call, so tests can interrupt a run mid-stage."""
        fail_at_call: int = -1
        """Raise a RuntimeError on this call (counted from 0), as a buggy plugin would; -1: never."""

    def __init__(self, cfg: Config, ctx):
        super().__init__(cfg, ctx)
        self.calls = 0

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> dict[str, Tensor]:
        self.calls += 1
        if self.calls - 1 == self.cfg.fail_at_call:
            raise RuntimeError(f"toy failure on call {self.cfg.fail_at_call}")
        if self.cfg.sleep_s:
            time.sleep(self.cfg.sleep_s)
        rgb = inp.render["rgb"]
        base = toy_target(rgb.shape[1]).to(rgb)
        # The "camera" shifts the render, so the target is shifted the same way.
        target = torch.stack([torch.roll(base, (int(s[0]), int(s[1])), (0, 1)) for s in inp.cameras])
        noise = self.cfg.noise * torch.randn(rgb.shape, generator=generator).to(rgb)
        loss = (rgb - target - noise).pow(2).mean()
        return {"loss_fit": loss, "t": torch.tensor(0.5)}


@register("exporter", "toy-png")
class ToyPngExporter:
    """Writes the toy image as a PNG (test only)."""

    @dataclass
    class Config:
        filename: str = "toy.png"

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def export(self, rep: ToyImage, ctx, assets_dir) -> dict[str, str]:
        import imageio.v3 as iio

        path = assets_dir / self.cfg.filename
        iio.imwrite(path, (rep.image.detach().clamp(0, 1) * 255).byte().cpu().numpy())
        return {"image": str(path)}
