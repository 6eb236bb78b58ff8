"""A fixed-geometry texture fit under the demo prior: the measuring stick for guidance.

The geometry is the target's, only the UV albedo is optimised, so the multi-view PSNR against the
target measures how well a guidance distils the prior's texture. Used by the tests and by
``benchmarks/bench_guidance_quality.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from guidance.base import GuidanceInput
from headgen.config import parse
from headgen.prior.demo.backbone import DemoBackbone
from headgen.prior.demo.metrics import demo_scores
from headgen.prior.demo.world import DemoWorld
from headgen.registry import lookup
from headgen.render.landmarks import render_landmark_map
from headgen.render.mesh_renderer import MeshRenderer


@dataclass
class TextureFit:
    guidance: str
    guidance_cfg: dict[str, Any]
    steps: int = 100
    lr: float = 0.005
    resolution: int = 128
    landmarks: bool = False
    batch_size: int = 2
    seed: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)


def fit_texture(world: DemoWorld, fit: TextureFit, record_every: int = 0) -> tuple[float, float]:
    """Run the fit; returns (PSNR at start, PSNR at the end) in dB."""
    from representations.parametric_mesh import ParametricMesh, ParametricMeshConfig

    torch.manual_seed(fit.seed)
    ctx = SimpleNamespace(head=world.head, device=world.device)
    rep = ParametricMesh(parse(ParametricMeshConfig, {
        "num_identity": world.head.num_identity, "displacement": False, "normal_map_size": 0,
        "texture_size": 128, "init_albedo": [0.5, 0.5, 0.5]}), ctx)
    rep.set_identity(world.target.beta)
    cls = lookup("guidance", fit.guidance)
    roles = ["landmarks"] if fit.landmarks else []
    guidance = cls(parse(cls.Config, {"resolution": fit.resolution, **fit.guidance_cfg}), None,
                   backbone=DemoBackbone(world, controlnets=roles))
    sampler_cls = lookup("cameras", "random")
    cams = sampler_cls(parse(sampler_cls.Config, {
        "batch_size": fit.batch_size, "elevation_range": [-10, 35], "azimuth_range": [-75, 75],
        "distance_range": [3, 3], "fovy_range": [30, 30], "light": "front-hemisphere",
        "resolution": fit.resolution}))
    renderer = MeshRenderer(MeshRenderer.Config(resolution=fit.resolution))
    opt = torch.optim.Adam([rep.albedo], lr=fit.lr, betas=(0.9, 0.99), eps=1e-15)
    gen = torch.Generator().manual_seed(fit.seed)
    points = world.head.landmarks_mediapipe(world.head.vertices(world.target.beta))
    start = demo_scores(rep, world)["psnr"]
    fit.history = [(0, start)]
    for step in range(fit.steps):
        views = cams.sample(step, gen)
        out = renderer.render(rep.render_input(), views.cameras, views.lights, modes=("rgb",), generator=gen)
        lmk = render_landmark_map(points, views.cameras) if fit.landmarks else None
        inp = GuidanceInput(out, views.cameras, views.view_labels, world.prompt, step, lights=views.lights,
                            inputs={"landmark_map": lmk} if lmk is not None else {})
        terms = guidance(inp, gen)
        loss = sum(v for k, v in terms.items() if k.startswith("loss_"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if record_every and (step + 1) % record_every == 0:
            fit.history.append((step + 1, demo_scores(rep, world)["psnr"]))
    end = demo_scores(rep, world)["psnr"]
    return start, end
