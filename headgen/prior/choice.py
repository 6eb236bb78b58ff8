"""Which prior a run uses: pretrained weights or the demo prior, chosen once when the run starts.

``prior: auto`` uses pretrained weights when every model the recipe names is on disk, and the demo
prior otherwise, announced with a banner and recorded in ``summary.json``. ``prior: pretrained``
with a missing model is an error naming the model and how to get it. The choice is kept on the run
context (``ctx.prior``) per model, so every part asks the same object; today a run never mixes the
two (one missing model puts every model on the demo prior), and a resumed run keeps its choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from headgen.config.recipe import ModelSpec, RunConfig
from headgen.config.typed import model_refs
from headgen.errors import HeadgenError, ModelNotFoundError
from headgen.models.zoo import how_to_get, is_available

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


def choose_prior(config: RunConfig, log: Callable[[str], None], recorded: str | None = None) -> PriorChoice:
    """The prior of a run of ``config`` (announced through ``log`` when it is the demo prior).

    ``recorded``: the prior a resumed run already used (its ``summary.json``); the run keeps it.
    """
    names = models_used(config)
    if not names:
        return PriorChoice(mode=recorded or config.prior)
    mode = recorded if recorded in ("pretrained", "demo") else config.prior
    if mode == "demo":
        reason = "the run started on it." if recorded == "demo" else "prior=demo was requested."
        log(BANNER.format(reason=reason))
        return PriorChoice(mode="demo", models=dict.fromkeys(names, "demo"))
    missing = [n for n in names if not available(config.models[n])]
    if missing and mode == "pretrained":
        raise ModelNotFoundError(how_to_get(missing[0], config.models[missing[0]]))
    if missing:
        spec = config.models[missing[0]]
        log(BANNER.format(reason=f"no local weights for '{missing[0]}' ({spec.hub_id})."))
        return PriorChoice(mode="demo", models=dict.fromkeys(names, "demo"))
    return PriorChoice(mode="pretrained", models=dict.fromkeys(names, "pretrained"))
