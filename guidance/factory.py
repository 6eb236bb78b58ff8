"""Which prior a run uses (pretrained weights or the demo prior), and the backbones it loads.

``prior: auto`` uses pretrained weights when every model the recipe names is on disk, and the
demo prior otherwise, announced with a banner and recorded in ``summary.json``. ``prior:
pretrained`` with a missing model is an error naming the model and how to get it. The choice is
made once per run, so no run mixes the two.
"""

from __future__ import annotations

from typing import Any

from guidance.backbone import DiffusionBackbone, PretrainedBackbone
from guidance.prompts import PromptConfig, TextEmbedder
from headgen.config.recipe import ModelSpec
from headgen.config.typed import model_refs
from headgen.errors import ModelNotFoundError
from headgen.models.zoo import how_to_get, is_available, load_component

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


def models_used(ctx: Any) -> list[str]:
    return sorted({name for _, name in model_refs(ctx.config.stages, "stages")})


def _available(spec: ModelSpec) -> bool:
    return is_available(spec, REQUIRED_COMPONENTS.get(spec.kind, ()))


def prior_mode(ctx: Any) -> str:
    """'pretrained' or 'demo' for this run (decided on first use, then fixed)."""
    if "prior_used" in ctx.state:
        return ctx.state["prior_used"]
    cfg = ctx.config
    mode = cfg.prior
    if mode != "demo":
        missing = [n for n in models_used(ctx) if not _available(cfg.models[n])]
        if missing and mode == "pretrained":
            raise ModelNotFoundError(how_to_get(missing[0], cfg.models[missing[0]]))
        if missing:
            spec = cfg.models[missing[0]]
            ctx.log(BANNER.format(reason=f"no local weights for '{missing[0]}' ({spec.hub_id})."))
            mode = "demo"
        else:
            mode = "pretrained"
    else:
        ctx.log(BANNER.format(reason="prior=demo was requested."))
    ctx.state["prior_used"] = mode
    return mode


def get_backbone(
    ctx: Any, model: str, *, prompt: PromptConfig, controlnets: dict[str, str] | None = None
) -> DiffusionBackbone:
    """The backbone for ``model`` (+ named ControlNets), loaded once per run and shared."""
    controlnets = dict(controlnets or {})
    key = (model, tuple(sorted(controlnets.items())), prompt.token_file)
    cache = ctx.state.setdefault("backbones", {})
    if key in cache:
        return cache[key]
    if prior_mode(ctx) == "demo":
        from guidance.demo.backbone import DemoBackbone

        backbone: DiffusionBackbone = DemoBackbone.for_run(ctx, controlnets=list(controlnets))
    else:
        backbone = load_pretrained(ctx.config.models, model, controlnets, prompt, ctx.device)
    cache[key] = backbone
    return backbone


def load_pretrained(
    models: dict[str, ModelSpec], model: str, controlnets: dict[str, str], prompt: PromptConfig, device: Any
) -> PretrainedBackbone:
    spec = models[model]
    if spec.kind != "diffusers":
        raise ModelNotFoundError(
            f"model '{model}' has kind '{spec.kind}', but a diffusion backbone needs kind diffusers"
        )
    parts = {c: load_component(model, spec, c, device) for c in REQUIRED_COMPONENTS["diffusers"]}
    model_key = f"{spec.local_dir or spec.hub_id}/{spec.subfolder or ''}@{spec.revision or ''}"
    text = TextEmbedder(parts["tokenizer"], parts["text_encoder"], model_key, prompt)
    nets = {role: load_component(name, models[name], "controlnet", device) for role, name in controlnets.items()}
    return PretrainedBackbone(parts["unet"], parts["vae"], text, parts["scheduler"], nets, device)
