"""The top-level schema of a recipe (``methods/*.yaml`` after composition)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from headgen.config.demo import DemoSettings
from headgen.config.typed import Component, component, model_refs, parse
from headgen.errors import ConfigError, did_you_mean


@dataclass
class ModelSpec:
    """A pretrained model, loaded through diffusers/transformers ``from_pretrained``."""

    hub_id: str
    """Hugging Face Hub id (e.g. ``runwayml/stable-diffusion-v1-5``) used when no local_dir is set."""
    subfolder: str | None = None
    """Subfolder inside the repository (e.g. ControlNetMediaPipeFace's ``diffusion_sd15``)."""
    variant: str | None = None
    """Weight variant to load (e.g. ``fp16``)."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Weights dtype: auto is float16 on GPU and float32 on CPU."""
    channels_last: bool = False
    """Convolutional networks (UNet, ControlNet, VAE) in channels_last memory format (on GPU often
    faster convolutions; ``benchmarks/bench_step.py --variants`` measures it)."""
    attention: Literal["sdpa", "classic"] = "sdpa"
    """sdpa: torch's scaled_dot_product_attention (diffusers' default, fused kernels); classic: the
    explicit softmax(QK^T)V processor, kept to measure what SDPA gains."""
    compile: bool = False
    """``torch.compile`` the UNet and ControlNets (the first steps compile: slow start, faster steps)."""
    local_dir: str | None = None
    """A local directory holding the model; takes precedence over hub_id."""
    revision: str | None = None
    """Hub revision (branch, tag or commit)."""
    kind: str = "diffusers"
    """Which library and class loads it (e.g. diffusers, controlnet, clip)."""
    optional: bool = False
    """The recipe can do without it: when it is not on disk, the parts that need it are switched off
    (each part says how, e.g. DreamFace's texture path) instead of the run falling back to the demo prior."""
    public: bool = True
    """Its weights are published on the Hub (false: ``--models`` says to bring your own via local_dir)."""


@dataclass
class RunConfig:
    """A whole run: what to make, with which prior, and the ordered stages that make it."""

    name: str
    """Method name; the run directory is outputs/<name>/<prompt-slug>@<time>."""
    stages: dict[str, Component] = component("stage", key="kind")
    """Ordered stages (YAML order), each `{kind: optimize|select|convert|export|..., ...}`."""
    prompt: str = ""
    """The text prompt describing the head."""
    negative_prompt: str = ""
    """Negative prompt for classifier-free guidance."""
    edit_prompt: str = ""
    """Edit instruction (editing recipes)."""
    source: str = ""
    """Run directory of a finished run to start from (editing recipes)."""
    seed: int = 0
    """Seed of every random generator in the run."""
    prior: Literal["auto", "pretrained", "demo"] = "auto"
    """auto: pretrained weights when present locally, else the demo prior (announced loudly)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    output_dir: str = "outputs"
    """Root folder for run directories."""
    head: Component | None = component("head", default={"type": "builtin"})
    """The head model (builtin, ict-facekit, flame); null for recipes that use none."""
    models: dict[str, ModelSpec] = field(default_factory=dict)
    """Named pretrained models (configs/models.yaml); recipes refer to them as ${models.NAME}."""
    require_prompt: bool = True
    """Reject an empty prompt (recipes that need no text may turn this off)."""
    description: str = ""
    """One paragraph on what the recipe does, shown by --list."""
    demo: DemoSettings = field(default_factory=DemoSettings)
    """The demo prior's data set and autoencoder (read only under the demo prior)."""
    dry_run: bool = False
    """Set by ``--dry-run``: the models are full-size random-weight stand-ins (results are noise)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form values that fragments may interpolate (${extra.x}); not read by the framework."""


def validate(plain: dict[str, Any]) -> RunConfig:
    """Typed validation of a composed recipe, plus the checks no type can express."""
    if "extends" in plain:
        plain = {k: v for k, v in plain.items() if k != "extends"}
    # `prompt:` with nothing after it is YAML's null: for a text it means "empty", which the checks
    # below name, rather than a type error.
    texts = ("prompt", "negative_prompt", "edit_prompt")
    plain = {k: ("" if v is None and k in texts else v) for k, v in plain.items()}
    cfg = parse(RunConfig, plain)
    for name, stage in cfg.stages.items():
        if stage.type == "load" and not (getattr(stage.config, "source", "") or cfg.source):
            raise ConfigError(
                f"stages.{name}: this recipe edits a finished run: pass source=RUN_DIR (its run directory)"
            )
    if cfg.require_prompt and not cfg.prompt.strip():
        raise ConfigError(
            'prompt is empty: describe the head, e.g. prompt="the face of an old sailor with a grey beard" '
            "on the command line, or set prompt: in the recipe"
        )
    if not cfg.stages:
        raise ConfigError("stages: the recipe defines no stage")
    for where, name in model_refs(cfg.stages, "stages"):
        if name not in cfg.models:
            raise ConfigError(
                f"{where}: unknown model '{name}'{did_you_mean(name, cfg.models)}; models defined in this recipe "
                f"(configs/models.yaml): {', '.join(cfg.models) or '(none)'}"
            )
    return cfg
