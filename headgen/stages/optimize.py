"""The ``optimize`` stage: one generic Lightning module for every method.

Each step: sample a camera batch, render the representation, make the inputs the guidance
declares (:mod:`headgen.inputs`), call the guidance, add its ``loss_*`` terms weighted by the
matching ``lambda_*`` of the stage's ``losses``, add the representation's regularisers named
there, step the optimiser, then call the representation's and the guidance's ``on_step_end``
(either may change its parameter set). No per-method system classes, no per-method settings.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from guidance.base import Guidance, GuidanceInput
from headgen.config.schedule import Scalar, Schedule, value_at
from headgen.config.typed import Component, component, config_class
from headgen.context import RunContext
from headgen.errors import ConfigError, NonFiniteLossError, RegistryError, ResumeError, did_you_mean
from headgen.inputs.base import InputProvider, StepState
from headgen.protocols import CameraSampler, Renderer
from headgen.registry import lookup, register
from headgen.rundir import atomic_write, verify_checked
from headgen.stages.base import Stage
from headgen.stages.callbacks import AtomicCheckpoint, StageProgressBar
from headgen.stages.results import save_result
from representations.base import Representation

GUIDANCE_WEIGHTS = "guidance.safetensors"
"""Where an optimize stage leaves the final weights of a guidance that trains its own (``Guidance.module``)."""


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    """Optimiser class from torch.optim."""
    lr: Scalar = 1.0e-3
    """Learning rate of every group not listed in `groups` (a schedule scales it over steps)."""
    groups: dict[str, Scalar] = field(default_factory=dict)
    """Learning rate per named parameter group; when non-empty, ONLY these groups of the representation
    are trained (a guidance's own groups are always trained, at its own rate unless named here)."""
    betas: tuple[float, float] = (0.9, 0.99)
    """Adam betas."""
    eps: float = 1.0e-15
    """Adam epsilon."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW)."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value (None: no clipping)."""

    def __post_init__(self) -> None:
        rates = {"lr": self.lr, **{f"groups.{k}": v for k, v in self.groups.items()}}
        for name, rate in rates.items():
            values = (rate.start_value, rate.end_value) if isinstance(rate, Schedule) else (rate,)
            if any(v < 0 for v in values):
                raise ValueError(f"{name}: a learning rate must be >= 0 (0 freezes the group), got {rate}")
        if self.eps <= 0 or self.weight_decay < 0 or (self.grad_clip is not None and self.grad_clip <= 0):
            raise ValueError(f"eps must be > 0, weight_decay >= 0 and grad_clip > 0 or null, got eps={self.eps}, "
                             f"weight_decay={self.weight_decay}, grad_clip={self.grad_clip}")


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
    inputs: dict[str, Component] = component("input", default={})
    """Providers of the inputs the guidance declares, by input name ({landmark_map: {type: landmark_map,
    back_view: none}}); a declared input not named here gets the provider registered under its name."""

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
        representation: Representation,
        renderer: Renderer,
        cameras: CameraSampler,
        guidance: Guidance | None,
        ctx: RunContext,
        generator: torch.Generator,
        providers: dict[str, InputProvider] | None = None,
    ):
        super().__init__()
        self.stage_name = stage_name
        self.cfg = cfg
        self.representation = representation
        # A guidance's own trainable weights join the module tree: checkpointed and resumed with the rest.
        module = guidance.module() if guidance is not None else None
        if module is not None:
            self.guidance_module = module
        # Frozen parts stay out of the module tree so checkpoints hold only what is learned.
        self._parts = {"renderer": renderer, "cameras": cameras, "guidance": guidance, "ctx": ctx}
        self.providers: dict[str, InputProvider] = dict(providers or {})
        self.generator = generator
        self._trained: set[int] = set()
        modes = list(getattr(guidance, "required_modes", ())) + list(cfg.modes)
        self.modes = tuple(dict.fromkeys(modes or ["rgb"]))
        self._checked_terms = False
        self.last_terms: dict[str, float] = {}

    @property
    def renderer(self) -> Renderer:
        return self._parts["renderer"]

    @property
    def cameras(self) -> CameraSampler:
        return self._parts["cameras"]

    @property
    def guidance(self) -> Guidance | None:
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
        live = self.ctx.live_viewer
        if live is not None and live.wants(step + 1, self.cfg.steps):
            from headgen.viewer.live import preview_image

            self.last_preview = preview_image(render)
        terms: dict[str, Tensor] = {}
        if self.guidance is not None:
            state = StepState(self.stage_name, step, self.representation, self.renderer, views, render, self.device)
            inp = GuidanceInput(
                render=render,
                cameras=views.cameras,
                view_labels=list(getattr(views, "view_labels", [])),
                prompt=self.ctx.config.prompt,
                negative_prompt=self.ctx.config.negative_prompt,
                step=step,
                lights=getattr(views, "lights", None),
                inputs={name: provider(state) for name, provider in self.providers.items()},
                extra=dict(self.representation.guidance_extras()),
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
            "Lower the learning rate or the loss weights and --resume the run directory with the new values "
            f"(e.g. --resume RUN stages.{self.stage_name}.optimizer.lr=...)."
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        bad = [n for n, p in self.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            self._raise_non_finite(int(self.global_step), {f"grad[{bad[0]}]": math.nan})

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # Here rather than in on_train_batch_end: the checkpoint callback runs before that hook, and a
        # resumed run must start from the parameter set the step left.
        super().optimizer_step(*args, **kwargs)
        step = int(self.global_step)
        changed = self.representation.on_step_end(step)
        if self.guidance is not None:
            changed = self.guidance.on_step_end(step) or changed
        if changed:
            self._sync_optimizer()

    def _groups(self) -> tuple[dict[str, list[torch.nn.Parameter]], dict[str, list[torch.nn.Parameter]]]:
        """(the representation's, the guidance's) named parameter groups, as they are now."""
        own = self.guidance.param_groups() if self.guidance is not None else {}
        groups = self.representation.param_groups()
        clash = sorted(set(own) & set(groups))
        if clash:
            raise ConfigError(
                f"stages.{self.stage_name}: the representation and the guidance both name a parameter group "
                f"'{clash[0]}'; rename one of them"
            )
        return groups, own

    def _sync_optimizer(self) -> None:
        """Point the optimiser at the current parameters after a part added or removed some: the state
        of parameters that stayed is kept, removed ones are dropped, new ones start fresh."""
        groups, own = self._groups()
        current = {**groups, **own}
        opt = self.optimizers(use_pl_optimizer=False)
        for group in opt.param_groups:
            params = list(current[group["name"]])
            keep = {id(p) for p in params}
            for p in group["params"]:
                if id(p) not in keep:
                    opt.state.pop(p, None)
            group["params"] = params
            self._trained.update(id(p) for p in params)
        for p in self.parameters():
            p.requires_grad_(id(p) in self._trained)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        where = f"stages/{self.stage_name}/last.ckpt"
        problem = self.ctx.stamp(self.stage_name).mismatch(checkpoint.get("headgen"), where)
        if problem:
            raise ResumeError(f"{problem}; remove it to restart the stage, or restore its own")
        prefix = "representation."
        state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        self.representation.before_load(state)  # a representation whose parameter count changed resizes here
        self.generator.set_state(checkpoint["headgen"]["generator"])

    def configure_optimizers(self) -> Any:
        opt_cfg = self.cfg.optimizer
        groups, own = self._groups()
        if opt_cfg.groups:
            known = [*groups, *own]
            unknown = [g for g in opt_cfg.groups if g not in known]
            if unknown:
                raise ConfigError(
                    f"stages.{self.stage_name}.optimizer.groups.{unknown[0]}: there is no parameter group "
                    f"'{unknown[0]}'{did_you_mean(unknown[0], known)}; groups: {', '.join(known)}"
                )
            selected = {g: opt_cfg.groups[g] for g in opt_cfg.groups if g in groups}
        else:
            selected = {g: opt_cfg.lr for g in groups}
        selected.update({g: opt_cfg.groups.get(g, self.guidance.group_lr(g)) for g in own})
        groups = {**groups, **own}
        trained = {id(p) for g in selected for p in groups[g]}
        for p in self.parameters():
            p.requires_grad_(id(p) in trained)
        if not trained:
            raise ConfigError(f"stages.{self.stage_name}.optimizer: no parameter is trained")
        self._trained = trained
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

    def on_train_start(self) -> None:
        # After a checkpoint was restored: the optimiser's hyper-parameters come from the config, not the
        # checkpoint, so --resume with a new learning rate or eps applies from the first resumed step
        # (unchanged values give the same numbers, so a plain resume is bit-identical).
        opt_cfg = self.cfg.optimizer
        scheduler = self.lr_schedulers()
        groups = self.optimizers(use_pl_optimizer=False).param_groups
        for group, base, lr_lambda in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
            group["lr"] = base * lr_lambda(scheduler.last_epoch)
            if opt_cfg.name != "sgd":
                group.update(betas=tuple(opt_cfg.betas), eps=opt_cfg.eps, weight_decay=opt_cfg.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["headgen"] = {"generator": self.generator.get_state(), **asdict(self.ctx.stamp(self.stage_name))}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Steps(), batch_size=None)


@register("stage", "optimize")
class OptimizeStage(Stage):
    """Optimise a representation with guidance and regularisers (a Lightning fit)."""

    Config = OptimizeConfig

    def can_resume_from(self, stage_dir: Path) -> Path | None:
        ckpt = stage_dir / "last.ckpt"
        if not ckpt.is_file():
            return None
        try:
            verify_checked(ckpt, f"stages/{self.name}/last.ckpt")
        except ResumeError as exc:
            raise ResumeError(f"{exc}; remove it and last.ckpt.sha256 to restart stage '{self.name}' from its "
                              "first step") from exc
        return ckpt

    def run(self, ctx: RunContext, resume_checkpoint: Path | None = None) -> None:
        stage_dir = ctx.run_dir.stage_dir(self.name)
        torch.manual_seed(ctx.stage_seed(self.name))
        representation = self.build_representation(ctx, self.cfg.representation)
        renderer = self.cfg.renderer.build()
        cameras = self.cfg.cameras.build()
        guidance = self.cfg.guidance.build(ctx) if self.cfg.guidance is not None else None
        representation.on_stage_start(self.cfg.steps)
        if guidance is not None:
            guidance = guidance.to(ctx.device)
            guidance.on_stage_start(self.cfg.steps)
            if getattr(guidance, "backbone", None) is not None:
                representation.attach(guidance.backbone)
        providers = self.build_inputs(ctx, guidance)
        system = OptimizeSystem(
            self.name, self.cfg, representation, renderer, cameras, guidance, ctx, ctx.generator(self.name), providers
        )
        if self.cfg.steps > 0:
            with _quiet_lightning(ctx.verbose):
                resumed = resume_checkpoint is not None
                trainer = make_trainer(self.name, self.cfg, stage_dir, ctx, resumed=resumed)
                trainer.fit(system, ckpt_path=resume_checkpoint, weights_only=True)
            # Lightning's teardown moves the module to the CPU after fit; everything after this
            # (finalize's VAE decode, metrics, the next stage) runs on the run's device.
            system.to(ctx.device)
        representation.finalize()
        ctx.state["representation"] = representation
        save_result(stage_dir, representation, ctx.stamp(self.name))
        module = guidance.module() if guidance is not None else None
        if module is not None:  # e.g. a VSD LoRA: kept beside the result for inspection or reuse
            tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
            atomic_write(stage_dir / GUIDANCE_WEIGHTS, lambda p: save_file(tensors, str(p)))
        ctx.metrics.update({f"{self.name}/{k}": v for k, v in representation.metrics(ctx).items()})
        if system.last_terms:
            ctx.metrics[f"{self.name}/final_loss"] = system.last_terms["loss"]

    def build_inputs(self, ctx: RunContext, guidance: Any) -> dict[str, InputProvider]:
        """One provider per input the guidance declares: the stage's ``inputs.<name>`` node, else the
        provider registered under the input's name (with its defaults)."""
        declared = tuple(getattr(guidance, "inputs", ())) if guidance is not None else ()
        providers: dict[str, InputProvider] = {}
        for name in declared:
            node = self.cfg.inputs.get(name)
            if node is not None:
                providers[name] = node.build(ctx, self.name)
                continue
            try:
                cls = lookup("input", name)
            except RegistryError as exc:
                raise ConfigError(
                    f"stages.{self.name}.inputs.{name}: the guidance needs the input '{name}' and no provider is "
                    f"registered under that name; name one: inputs: {{{name}: {{type: <input provider>}}}} ({exc})"
                ) from exc
            providers[name] = cls(config_class(cls)(), ctx, self.name)
        unused = sorted(set(self.cfg.inputs) - set(declared))
        if unused:
            ctx.log(f"[{self.name}] note: inputs.{unused[0]} is configured but the guidance does not read it "
                    f"(it reads: {', '.join(declared) or 'nothing besides the render'})")
        return providers


def make_trainer(
    name: str, cfg: OptimizeConfig, stage_dir: Path, ctx: RunContext, resumed: bool = False
) -> pl.Trainer:
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    if ctx.device.type == "cuda":
        accelerator, devices = "gpu", [ctx.device.index or 0]
    else:
        accelerator, devices = "cpu", 1
    version = ""
    if resumed or (stage_dir / "logs").exists():
        # Keep the interrupted session's logs (also of a stage restarted without a checkpoint): the new
        # session writes beside them.
        kind, n = ("resumed" if resumed else "restarted"), 1
        while (stage_dir / "logs" / f"{kind}-{n}").exists():
            n += 1
        version = f"{kind}-{n}"
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
        callbacks=[StageProgressBar(name), AtomicCheckpoint(stage_dir / "last.ckpt", cfg.checkpoint_every)]
        + ([ctx.live_viewer.callback(name)] if ctx.live_viewer is not None else []),
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
