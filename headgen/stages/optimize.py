"""The ``optimize`` stage: one generic Lightning module for every method.

Each step: sample a camera batch, render the representation, call the guidance, add its
``loss_*`` terms weighted by the matching ``lambda_*`` of the stage's ``losses``, add the
representation's regularisers named there, step the optimiser. No per-method system classes.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from guidance.base import GuidanceInput
from headgen.config.schedule import Scalar, value_at
from headgen.config.typed import Component, component
from headgen.context import RunContext
from headgen.errors import ConfigError, NonFiniteLossError, did_you_mean
from headgen.registry import register
from headgen.stages.base import Stage
from headgen.stages.callbacks import AtomicCheckpoint, StageProgressBar
from headgen.stages.results import save_result


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    """Optimiser class from torch.optim."""
    lr: Scalar = 1.0e-3
    """Learning rate of every group not listed in `groups` (a schedule scales it over steps)."""
    groups: dict[str, Scalar] = field(default_factory=dict)
    """Learning rate per named parameter group; when non-empty, ONLY these groups are trained."""
    betas: tuple[float, float] = (0.9, 0.99)
    """Adam betas."""
    eps: float = 1.0e-15
    """Adam epsilon."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW)."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value (None: no clipping)."""


@dataclass(kw_only=True)
class OptimizeConfig:
    steps: int = 1000
    """Optimisation steps."""
    renderer: Component = component("renderer")
    """How the representation is drawn ({type: mesh|volume, ...})."""
    cameras: Component = component("cameras")
    """Camera (and light) sampler for training views."""
    representation: Component | None = component("representation", default=None)
    """The representation to optimise; omitted: continue the previous stage's."""
    guidance: Component | None = component("guidance", default=None)
    """Score distillation (or other) guidance returning loss_* terms; omitted: regularisers only."""
    losses: dict[str, Scalar] = field(default_factory=dict)
    """lambda_<name> weights for guidance losses (loss_<name>) and representation regularisers."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """Optimiser and per-group learning rates."""
    modes: list[str] = field(default_factory=list)
    """Extra renderer outputs to produce besides those the guidance asks for."""
    checkpoint_every: int = 50
    """Write stages/<name>/last.ckpt every this many steps (and at the end)."""
    log_every: int = 10
    """Log scalars to CSV/TensorBoard every this many steps."""
    preview_every: int = 0
    """Save a preview image every this many steps (0: only at the end)."""
    landmarks: Literal["off", "head", "representation"] = "off"
    """Landmark maps for ControlNet guidance: head = the head model's landmarks (selected identity when the
    representation has one, else the template); representation = the representation's own (parametric meshes)."""
    source_render: bool = False
    """Render the frozen source head (a `load` stage's) at the same cameras for the guidance (IESD)."""
    landmark_back_view: Literal["oval", "none"] = "oval"
    """Back views (|azimuth| > 90) draw the face oval only (HeadArtist) or nothing (HeadSculpt)."""

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        for key in self.losses:
            if not key.startswith("lambda_"):
                raise ValueError(f"losses.{key}: loss weights are named lambda_<term>, e.g. lambda_{key}")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")


class _Steps(IterableDataset):
    """An endless stream of step markers: every batch is produced inside training_step."""

    def __iter__(self):
        while True:
            yield 0


class OptimizeSystem(pl.LightningModule):
    """Generic optimisation of a representation under guidance and regularisers."""

    def __init__(
        self,
        stage_name: str,
        cfg: OptimizeConfig,
        representation: torch.nn.Module,
        renderer: Any,
        cameras: Any,
        guidance: Any,
        ctx: RunContext,
        generator: torch.Generator,
    ):
        super().__init__()
        self.stage_name = stage_name
        self.cfg = cfg
        self.representation = representation
        # Frozen parts stay out of the module tree so checkpoints hold only what is learned.
        self._parts = {"renderer": renderer, "cameras": cameras, "guidance": guidance, "ctx": ctx}
        self.generator = generator
        modes = list(getattr(guidance, "required_modes", ())) + list(cfg.modes)
        self.modes = tuple(dict.fromkeys(modes or ["rgb"]))
        self._checked_terms = False
        self.last_terms: dict[str, float] = {}

    @property
    def renderer(self) -> Any:
        return self._parts["renderer"]

    @property
    def cameras(self) -> Any:
        return self._parts["cameras"]

    @property
    def guidance(self) -> Any:
        return self._parts["guidance"]

    @property
    def ctx(self) -> RunContext:
        return self._parts["ctx"]

    def forward_render(self, views: Any) -> dict[str, Tensor]:
        return self.renderer.render(
            self.representation.render_input(),
            views.cameras,
            views.lights,
            modes=self.modes,
            generator=self.generator,
        )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        step = int(self.global_step)
        views = self.cameras.sample(step, self.generator)
        views = views.to(self.device) if hasattr(views, "to") else views
        render = self.forward_render(views)
        terms: dict[str, Tensor] = {}
        if self.guidance is not None:
            inp = GuidanceInput(
                render=render,
                cameras=views.cameras,
                view_labels=list(getattr(views, "view_labels", [])),
                prompt=self.ctx.config.prompt,
                negative_prompt=self.ctx.config.negative_prompt,
                step=step,
                lights=getattr(views, "lights", None),
                landmark_map=self.landmark_map(views.cameras, render),
                source_render=self.source_render(views),
                extra=self.guidance_extras(),
            )
            terms.update(self.guidance(inp, self.generator))
        losses = self.cfg.losses
        guided = {k[len("loss_") :] for k in terms if k.startswith("loss_")}
        if not self._checked_terms:
            self._check_terms(guided)
        total = torch.zeros((), device=self.device)
        logged: dict[str, float] = {}
        for key, weight in losses.items():
            name = key[len("lambda_") :]
            lam = value_at(weight, step)
            if name in guided:
                value = terms[f"loss_{name}"]
            elif lam == 0.0:
                continue
            else:
                value = self.representation.regularizer(name, step)
            total = total + lam * value
            logged[f"loss_{name}"] = float(value.detach())
        for key, value in terms.items():
            if not key.startswith("loss_") and isinstance(value, (Tensor, float, int)):
                logged[key] = float(value.detach() if isinstance(value, Tensor) else value)
        if not total.requires_grad:
            raise ConfigError(
                f"stages.{self.stage_name}: nothing to optimise: no guidance loss and no lambda_* regulariser "
                "with a non-zero weight (set a guidance, or losses: {lambda_<name>: ...})"
            )
        if not torch.isfinite(total):
            self._raise_non_finite(step, logged)
        logged["loss"] = float(total.detach())
        self.last_terms = logged
        self.log_dict({f"train/{k}": v for k, v in logged.items()}, on_step=True, prog_bar=False)
        self.log("loss", logged["loss"], prog_bar=True, logger=False)
        return total

    @torch.no_grad()
    def source_render(self, views: Any) -> Tensor | None:
        """[B,H,W,3] render of the frozen pre-edit head at the batch's cameras, or None."""
        if not self.cfg.source_render:
            return None
        source = self.ctx.state.get("source_representation")
        if source is None:
            raise ConfigError(
                f"stages.{self.stage_name}.source_render: no source head: start the recipe with a load stage"
            )
        out = self.renderer.render(source.render_input(), views.cameras, views.lights, modes=("rgb",))
        return out["rgb"]

    def guidance_extras(self) -> dict[str, Any]:
        extra = dict(self.representation.guidance_extras())
        if self.ctx.config.edit_prompt:
            extra["edit_prompt"] = self.ctx.config.edit_prompt
        return extra

    def landmark_map(self, cameras: Any, render: dict[str, Tensor]) -> Tensor | None:
        """[B,H,W,3] MediaPipe contour maps at the batch's cameras (the render's size), or None."""
        mode = self.cfg.landmarks
        if mode == "off":
            return None
        from headgen.render.landmarks import render_landmark_map

        if mode == "representation":
            fn = getattr(self.representation, "landmarks_mediapipe", None)
            if fn is None:
                raise ConfigError(
                    f"stages.{self.stage_name}.landmarks: representation has no landmarks of its own; use head"
                )
            points = fn().detach()
        else:
            head = self.ctx.head
            beta = getattr(self.representation, "beta_star", None)
            points = head.landmarks_mediapipe(head.vertices(beta.detach().cpu()) if beta is not None else None)
        any_image = next(iter(render.values()))
        size = any_image.shape[1]
        cams = replace(cameras, height=size, width=any_image.shape[2])
        return render_landmark_map(points.to(self.device), cams, back_view=self.cfg.landmark_back_view).to(self.device)

    def _check_terms(self, guided: set[str]) -> None:
        self._checked_terms = True
        lambdas = {k[len("lambda_") :] for k in self.cfg.losses}
        missing = sorted(guided - lambdas)
        if missing:
            raise ConfigError(
                f"stages.{self.stage_name}.losses: the guidance returns loss_{missing[0]} but there is no "
                f"lambda_{missing[0]}; add it (0 switches the term off)"
            )
        offered = set(self.representation.regularizer_names())
        for name in sorted(lambdas - guided):
            if name not in offered:
                known = sorted(guided | offered)
                raise ConfigError(
                    f"stages.{self.stage_name}.losses.lambda_{name}: no guidance loss or regulariser named "
                    f"'{name}'{did_you_mean(name, known)}; available: {', '.join(known) or '(none)'}"
                )

    def _raise_non_finite(self, step: int, logged: dict[str, float]) -> None:
        ckpt = self.ctx.run_dir.stage_dir(self.stage_name) / "last.ckpt"
        terms = ", ".join(f"{k}={v:.4g}" for k, v in logged.items())
        kept = f"the last good checkpoint is kept at {ckpt}" if ckpt.exists() else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"stage {self.stage_name}, step {step}: the loss is not finite ({terms}); {kept}. "
            "Lower the learning rate or the loss weights, then --resume the run directory."
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        bad = [
            n
            for n, p in self.representation.named_parameters()
            if p.grad is not None and not torch.isfinite(p.grad).all()
        ]
        if bad:
            self._raise_non_finite(int(self.global_step), {f"grad[{bad[0]}]": math.nan})

    def configure_optimizers(self) -> Any:
        opt_cfg = self.cfg.optimizer
        groups = self.representation.param_groups()
        if opt_cfg.groups:
            unknown = [g for g in opt_cfg.groups if g not in groups]
            if unknown:
                raise ConfigError(
                    f"stages.{self.stage_name}.optimizer.groups.{unknown[0]}: the representation has no "
                    f"parameter group '{unknown[0]}'{did_you_mean(unknown[0], groups)}; groups: {', '.join(groups)}"
                )
            selected = {g: opt_cfg.groups[g] for g in opt_cfg.groups}
        else:
            selected = {g: opt_cfg.lr for g in groups}
        trained = {id(p) for g in selected for p in groups[g]}
        for p in self.representation.parameters():
            p.requires_grad_(id(p) in trained)
        if not trained:
            raise ConfigError(f"stages.{self.stage_name}.optimizer: no parameter is trained")
        lrs = [selected[g] for g in selected]
        param_groups = [{"params": groups[g], "lr": 1.0, "name": g} for g in selected]
        if opt_cfg.name == "sgd":
            opt = torch.optim.SGD(param_groups, lr=1.0)
        else:
            cls = torch.optim.AdamW if opt_cfg.name == "adamw" else torch.optim.Adam
            opt = cls(param_groups, lr=1.0, betas=opt_cfg.betas, eps=opt_cfg.eps, weight_decay=opt_cfg.weight_decay)
        # lr = 1 in the groups and the (possibly scheduled) value from LambdaLR: one code path
        # for constants and schedules.
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda=[(lambda s, lr=lr: value_at(lr, s)) for lr in lrs]
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["headgen"] = {"generator": self.generator.get_state(), "stage": self.stage_name}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.generator.set_state(checkpoint["headgen"]["generator"])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Steps(), batch_size=None)


@register("stage", "optimize")
class OptimizeStage(Stage):
    """Optimise a representation with guidance and regularisers (a Lightning fit)."""

    Config = OptimizeConfig

    def can_resume_from(self, stage_dir: Path) -> Path | None:
        ckpt = stage_dir / "last.ckpt"
        return ckpt if ckpt.is_file() else None

    def run(self, ctx: RunContext, resume_checkpoint: Path | None = None) -> None:
        stage_dir = ctx.run_dir.stage_dir(self.name)
        torch.manual_seed(ctx.stage_seed(self.name))
        representation = self.build_representation(ctx, self.cfg.representation)
        renderer = self.cfg.renderer.build()
        cameras = self.cfg.cameras.build()
        guidance = self.cfg.guidance.build(ctx) if self.cfg.guidance is not None else None
        if guidance is not None:
            guidance = guidance.to(ctx.device)
            guidance.total_steps = self.cfg.steps  # for schedules over the stage (e.g. decreasing t)
            if getattr(guidance, "backbone", None) is not None:
                representation.attach(guidance.backbone)
        system = OptimizeSystem(
            self.name, self.cfg, representation, renderer, cameras, guidance, ctx, ctx.generator(self.name)
        )
        if self.cfg.steps > 0:
            with _quiet_lightning(ctx.verbose):
                resumed = resume_checkpoint is not None
                trainer = make_trainer(self.name, self.cfg, stage_dir, ctx, resumed=resumed)
                trainer.fit(system, ckpt_path=resume_checkpoint, weights_only=True)
        representation.finalize()
        ctx.state["representation"] = representation
        save_result(stage_dir, representation)
        ctx.metrics.update({f"{self.name}/{k}": v for k, v in representation.metrics(ctx).items()})
        if system.last_terms:
            ctx.metrics[f"{self.name}/final_loss"] = system.last_terms["loss"]


def make_trainer(
    name: str, cfg: OptimizeConfig, stage_dir: Path, ctx: RunContext, resumed: bool = False
) -> pl.Trainer:
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    if ctx.device.type == "cuda":
        accelerator, devices = "gpu", [ctx.device.index or 0]
    else:
        accelerator, devices = "cpu", 1
    version = ""
    if resumed:  # keep the interrupted session's logs; the resumed one writes beside them
        n = 1
        while (stage_dir / "logs" / f"resumed-{n}").exists():
            n += 1
        version = f"resumed-{n}"
    loggers = [
        CSVLogger(str(stage_dir), name="logs", version=version),
        TensorBoardLogger(str(stage_dir), name="logs", version=version, default_hp_metric=False),
    ]
    return pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        max_steps=cfg.steps,
        max_epochs=-1,
        logger=loggers,
        callbacks=[StageProgressBar(name), AtomicCheckpoint(stage_dir / "last.ckpt", cfg.checkpoint_every)],
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=cfg.log_every,
        gradient_clip_val=cfg.optimizer.grad_clip,
        default_root_dir=str(stage_dir),
        deterministic=False,
    )


class _quiet_lightning:
    """Silence Lightning's start-up chatter (GPU available..., tips) unless --verbose."""

    def __init__(self, verbose: bool):
        self.verbose = verbose

    def __enter__(self) -> None:
        self._levels = {}
        if self.verbose:
            return
        for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            logger.setLevel(logging.WARNING)
        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        for pattern in (".*does not have many workers.*", ".*LightningModule.*log.*", ".*is an invalid version.*",
                        ".*Found .* module.*in eval mode.*", ".*max_epochs.*", ".*ckpt_path.*", ".*LeafSpec.*"):
            warnings.filterwarnings("ignore", message=pattern)

    def __exit__(self, *exc: Any) -> None:
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        if not self.verbose:
            self._warn.__exit__(*exc)
