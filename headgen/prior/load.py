"""The models a run's parts ask for by name: diffusion backbones (for guidance) and CLIP (for
selectors), pretrained (diffusers / transformers) or the demo prior's, as the run's prior choice
(``ctx.prior``, made when the run starts) says for that model; each loaded once per run."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from headgen.config.recipe import ModelSpec
from headgen.errors import ModelNotFoundError
from headgen.models.fingerprint import weights_fingerprint
from headgen.models.zoo import load_component
from headgen.prior.backbone import DiffusionBackbone, PretrainedBackbone
from headgen.prior.choice import REQUIRED_COMPONENTS
from headgen.prior.clip import ClipModel, load_clip
from headgen.prior.prompts import PromptConfig, TextEmbedder


def get_backbone(
    ctx: Any, model: str, *, prompt: PromptConfig, controlnets: dict[str, str] | None = None
) -> DiffusionBackbone:
    """The backbone for ``model`` (+ named ControlNets), loaded once per run and shared."""
    controlnets = dict(controlnets or {})
    key = (model, tuple(sorted(controlnets.items())), prompt.token_file)
    cache = ctx.state.setdefault("backbones", {})
    if key in cache:
        return cache[key]
    if ctx.prior.uses_demo(model):
        from headgen.prior.demo.backbone import DemoBackbone

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
    text = TextEmbedder(parts["tokenizer"], parts["text_encoder"], *text_cache_key(model, spec, parts, prompt))
    nets = {role: load_component(name, models[name], "controlnet", device) for role, name in controlnets.items()}
    return PretrainedBackbone(parts["unet"], parts["vae"], text, parts["scheduler"], nets, device)


def text_cache_key(model: str, spec: ModelSpec, parts: dict[str, Any], prompt: PromptConfig
                   ) -> tuple[str, PromptConfig]:
    """The key of ``model``'s cached text embeddings and the prompt config to embed with: the spec's
    location, variant and dtype plus a fingerprint of the text encoder's and tokenizer's files, so
    that new weights in the same folder (a resumed training run) are not served old embeddings.
    When the weights cannot be identified the disk cache is switched off (with a warning)."""
    encoder = parts["text_encoder"]
    dtype = str(next(encoder.parameters()).dtype).removeprefix("torch.")
    fingerprint = weights_fingerprint(spec, ("text_encoder", "tokenizer"), encoder)
    key = (f"{spec.local_dir or spec.hub_id}/{spec.subfolder or ''}@{spec.revision or ''}"
           f":{spec.variant or ''}:{dtype}|{fingerprint}")
    if fingerprint is None and prompt.cache_dir:
        warnings.warn(f"model '{model}': cannot tell which weights its text encoder was loaded from, so its text "
                      "embeddings are cached in memory only for this run", stacklevel=3)
        prompt = dataclasses.replace(prompt, cache_dir=None)
    return key, prompt


def get_clip(ctx: Any, name: str) -> ClipModel:
    """The run's CLIP for model ``name``: the demo CLIP under the demo prior, else the pretrained
    one; loaded once per run (cached in ``ctx.state``)."""
    demo = ctx.prior.uses_demo(name)
    cache = ctx.state.setdefault("clip_models", {})
    key = "<demo>" if demo else name
    if key not in cache:
        if demo:
            from headgen.prior.demo.clip import DemoClip

            cache[key] = DemoClip.for_run(ctx)
        else:
            cache[key] = load_clip(ctx, name, ctx.device)
    return cache[key]
