"""Which prior a run uses: pretrained weights or the demo prior, chosen per model once when the run starts.

``prior: auto`` looks for every model the recipe's stages name and prints, per model, what the run
uses. A missing model the recipe marks ``optional`` (DreamFace's texture LDM) switches off the
parts that need it (each part says how, e.g. ``dual-path-sds`` turns its texture path off), with
a notice, a record in ``summary.json`` and the changed options in ``config.yaml``. Any other missing
model puts the whole run on the demo prior, announced with a banner: a run never mixes pretrained
and demo backbones. ``prior: pretrained`` names every missing model it cannot do without at once,
each with how to get it (optional ones are switched off as under auto). ``prior: demo`` uses the
demo prior for every model. The choice is kept on the run context (``ctx.prior``); a resumed run
keeps it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from headgen.config.recipe import ModelSpec, RunConfig
from headgen.config.typed import model_refs, switch_off_model
from headgen.errors import ConfigError, HeadgenError, ModelNotFoundError, ResumeError
from headgen.models.full_size import is_random
from headgen.models.zoo import how_to_get, is_available, local_path

Source = Literal["pretrained", "demo"]

# What must be on disk for each kind of model entry.
REQUIRED_COMPONENTS: dict[str, tuple[str, ...]] = {
    "diffusers": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    "controlnet": ("controlnet",),
    "clip": ("clip",),
}

BANNER = """\
================================================================================
  DEMO PRIOR: {reason}
  This run uses headgen's demo prior: an exact diffusion model of renders of a
  known target head derived from the prompt. It is NOT a text-to-face model; its
  results are scored against that target. For real results, install the weights
  (README, "Real weights") or pass prior=pretrained to make their absence an error.
================================================================================"""


@dataclass(frozen=True)
class PriorChoice:
    """The run's prior: where each model the recipe names comes from."""

    mode: str
    """What ``summary.json`` reports: pretrained, demo, or the recipe's ``prior`` when it names no model."""
    models: dict[str, Source] = field(default_factory=dict)
    """{model name: pretrained | demo} for every model the recipe's stages name."""
    switched_off: dict[str, str] = field(default_factory=dict)
    """{optional model that was not on disk: what the run switched off without it}."""

    @property
    def demo(self) -> bool:
        """Whether the run is scored against the demo prior's target."""
        return self.mode == "demo"

    def source(self, model: str) -> Source:
        """Where ``model`` comes from in this run."""
        if model in self.models:
            return self.models[model]
        if self.mode in ("pretrained", "demo"):
            return self.mode  # type: ignore[return-value]
        raise HeadgenError(f"model '{model}' is not named by this recipe's stages, so the run chose no prior for it")

    def uses_demo(self, model: str) -> bool:
        return self.source(model) == "demo"


def models_used(config: RunConfig) -> list[str]:
    """The models the recipe's stages name (those a model switch leaves unused excepted)."""
    return sorted({name for _, name in model_refs(config.stages, "stages")})


def available(spec: ModelSpec) -> bool:
    return is_available(spec, REQUIRED_COMPONENTS.get(spec.kind, ()))


def choose_prior(
    config: RunConfig, log: Callable[[str], None], recorded: dict[str, Any] | None = None
) -> PriorChoice:
    """The prior of a run of ``config`` whose optional models are all present or already switched off.

    ``recorded``: a resumed run's ``summary.json``; the run keeps the prior it started on and its
    record of what was switched off.
    """
    recorded = recorded or {}
    off = recorded.get("switched_off") or {}
    if not isinstance(off, dict) or not all(isinstance(v, str) for v in off.values()):
        raise ResumeError("summary.json is damaged: 'switched_off' must map model names to texts; restore it")
    off = dict(off)
    names = models_used(config)
    rec = recorded.get("prior") if isinstance(recorded.get("prior"), str) else None
    if not names:
        return PriorChoice(mode=rec or config.prior, switched_off=off)
    mode = rec if rec in ("pretrained", "demo") else config.prior
    if mode == "demo":
        reason = "the run started on it." if rec == "demo" else "prior=demo was requested."
        log(BANNER.format(reason=reason))
        return PriorChoice(mode="demo", models=dict.fromkeys(names, "demo"), switched_off=off)
    random = [n for n in names if config.models[n].local_dir and is_random(config.models[n].local_dir)]
    if random and not config.dry_run:
        raise ModelNotFoundError(
            f"models.{random[0]}.local_dir={config.models[random[0]].local_dir} holds the random weights of a "
            "--dry-run (it has a RANDOM_WEIGHTS file), not a trained model; point it at real weights"
        )
    missing = [n for n in names if not available(config.models[n])]
    if missing and mode == "pretrained":
        raise ModelNotFoundError(
            f"prior=pretrained, but {len(missing)} model{'s' if len(missing) > 1 else ''} the recipe cannot do "
            "without " + ("is" if len(missing) == 1 else "are") + " not on disk:\n"
            + "\n".join(f"  - {how_to_get(n, config.models[n])}" for n in missing)
        )
    if missing:
        spec = config.models[missing[0]]
        log(BANNER.format(reason=f"no local weights for '{missing[0]}' ({spec.hub_id})."))
        return PriorChoice(mode="demo", models=dict.fromkeys(names, "demo"), switched_off=off)
    choice = PriorChoice(mode="pretrained", models=dict.fromkeys(names, "pretrained"), switched_off=off)
    log(models_table(config, choice))
    return choice


def switch_off_missing(config: RunConfig, log: Callable[[str], None]) -> tuple[RunConfig, dict[str, str]]:
    """A new run's config with the parts that need a missing optional model switched off.

    Returns the changed config (``config`` itself when nothing changed) and {model: what was switched
    off, per stage}. Under ``prior: demo``, or when a required model is missing too (the whole run
    then falls back to the demo prior, which stands in for every model), nothing is switched off.
    """
    names = models_used(config)
    if config.prior == "demo" or not names:
        return config, {}
    missing = [n for n in names if not available(config.models[n])]
    optional = [n for n in missing if config.models[n].optional]
    if not optional or (config.prior == "auto" and len(optional) < len(missing)):
        return config, {}
    changed = copy.deepcopy(config)
    switched: dict[str, str] = {}
    for name in optional:
        results = switch_off_model(changed.stages, name, "stages")
        cannot = [where for where, what in results if what is None]
        if cannot:
            raise ConfigError(
                f"model '{name}' is marked optional (models.{name}.optional) but is not on disk, and "
                f"{', '.join(cannot)} cannot do without it: install it ({how_to_get(name, config.models[name])}) "
                f"or set models.{name}.optional=false"
            )
        switched[name] = "; ".join(f"{where.rsplit('.', 1)[0]}: {what}" for where, what in results)
        parts = "\n".join(f"  {where.rsplit('.', 1)[0]}: {what}" for where, what in results)
        log(
            f"NOTICE: optional model '{name}' ({config.models[name].hub_id}) is not on disk, so the parts that "
            f"need it are switched off:\n{parts}\n  (summary.json records it under switched_off; to use it: "
            f"models.{name}.local_dir=/path/to/it)"
        )
    return changed, switched


def models_table(config: RunConfig, choice: PriorChoice) -> str:
    """Per model, what the run uses."""
    names = sorted(choice.models)
    width = max((len(n) for n in [*names, *choice.switched_off]), default=0)
    lines = [f"models (prior={config.prior}):"]
    for name in names:
        spec = config.models[name]
        where = local_path(spec)
        lines.append(f"  {name:<{width}}  {choice.models[name]}: {spec.hub_id}"
                     + (f" ({where})" if choice.models[name] == "pretrained" and where else ""))
    for name, what in choice.switched_off.items():
        lines.append(f"  {name:<{width}}  not on disk, optional: {what}")
    return "\n".join(lines)
