"""Test-only plugins (loaded with ``--plugin dynamic_parts``) for the optimize stage's lifecycle hooks,
with no core file edited for them:

* ``toy-points``: a 2D Gaussian-splat image whose point set grows and shrinks every ``every`` steps
  (split the points with the largest accumulated position gradient, prune the smallest), as 3D
  Gaussian splatting densifies and prunes; its background colour is a parameter that never changes.
* ``toy-vsd``: a guidance with its own trainable network, trained at its own learning rate, in the
  manner of VSD / ProlificDreamer's LoRA: the network learns to reproduce the current renders and the
  representation's gradient is (network's estimate - target).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from toy_parts import ToyRollRenderer, ToyTargetGuidance, toy_target

from guidance.base import Guidance, GuidanceInput
from headgen.registry import register
from representations.base import Representation


@register("representation", "toy-points")
class ToyPoints(Representation):
    """Gaussian points on an image that densify and prune every few steps (test only)."""

    @dataclass
    class Config:
        size: int = 16
        """Image size in pixels."""
        points: int = 12
        """Points at the start."""
        every: int = 4
        """Densify and prune after every this many steps."""
        grow: int = 3
        """Points split per densification (those with the largest accumulated position gradient)."""
        prune: int = 1
        """Points removed per densification (the smallest accumulated gradient)."""
        sigma: float = 0.12
        """Gaussian width in image units."""

    def __init__(self, cfg: Config, ctx):
        super().__init__(cfg, ctx)
        self.means = nn.Parameter(torch.rand(cfg.points, 2))
        self.colors = nn.Parameter(0.3 * torch.rand(cfg.points, 3))
        self.background = nn.Parameter(torch.full((3,), 0.2))
        self.register_buffer("grad_accum", torch.zeros(cfg.points))
        self.changes = 0

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"points": [self.means, self.colors], "background": [self.background]}

    def render_input(self) -> Tensor:
        s = self.cfg.size
        axis = torch.linspace(0, 1, s)
        grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1)  # [S,S,2]
        d2 = (grid[None] - self.means[:, None, None, :]).pow(2).sum(-1)  # [N,S,S]
        weights = torch.exp(-d2 / (2 * self.cfg.sigma**2))
        return self.background + torch.einsum("nhw,nc->hwc", weights, self.colors)

    def on_step_end(self, step: int) -> bool:
        if self.means.grad is not None:
            self.grad_accum += self.means.grad.detach().norm(dim=1)
        if (step + 1) % self.cfg.every:
            return False
        with torch.no_grad():
            order = torch.argsort(self.grad_accum, descending=True, stable=True)
            grow, keep = order[: self.cfg.grow], order[: len(order) - self.cfg.prune]
            offset = torch.tensor([0.02, -0.02])
            means = torch.cat([self.means[keep], self.means[grow] + offset])
            colors = torch.cat([self.colors[keep], self.colors[grow] * 0.5])
        self.means, self.colors = nn.Parameter(means), nn.Parameter(colors)
        self.grad_accum = torch.zeros(len(means))
        self.changes += 1
        return True

    def before_load(self, state: dict[str, Tensor]) -> None:
        n = state["means"].shape[0]
        if n != self.means.shape[0]:
            self.means = nn.Parameter(torch.zeros(n, 2))
            self.colors = nn.Parameter(torch.zeros(n, 3))
            self.grad_accum = torch.zeros(n)


@register("guidance", "toy-vsd")
class ToyVSDGuidance(Guidance):
    """VSD-style guidance with its own trainable network at its own learning rate (test only)."""

    @dataclass
    class Config:
        lora_lr: float = 0.02
        """Learning rate of the guidance's own network (group 'lora')."""
        sleep_s: float = 0.0
        """Seconds to sleep per call, so tests can interrupt a run mid-stage."""

    def __init__(self, cfg: Config, ctx):
        super().__init__(cfg, ctx)
        self.lora = nn.Conv2d(3, 3, 3, padding=1)

    def module(self) -> nn.Module:
        return self.lora

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"lora": list(self.lora.parameters())}

    def group_lr(self, name: str) -> float:
        return self.cfg.lora_lr

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> dict[str, Tensor]:
        if self.cfg.sleep_s:
            time.sleep(self.cfg.sleep_s)
        x = inp.render["rgb"].permute(0, 3, 1, 2)
        base = toy_target(x.shape[-1]).to(x)
        target = torch.stack([torch.roll(base, (int(s[0]), int(s[1])), (0, 1)) for s in inp.cameras])
        estimate = self.lora(x.detach()).permute(0, 2, 3, 1)
        grad = estimate.detach() - target  # eps_lora - eps_pretrained, in the toy world
        rgb = inp.render["rgb"]
        return {
            "loss_vsd": 0.5 * (rgb - (rgb - grad).detach()).pow(2).sum() / rgb.shape[0],
            "loss_lora": (estimate - rgb.detach()).pow(2).mean(),
        }


# toy_parts registers the renderer (toy-roll), cameras (toy-shift) and toy-target guidance used beside these.
__all__ = ["ToyPoints", "ToyRollRenderer", "ToyTargetGuidance", "ToyVSDGuidance"]
