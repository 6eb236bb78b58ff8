"""The model zoo: every pretrained model a recipe uses, loaded with ``from_pretrained``.

A :class:`~headgen.config.recipe.ModelSpec` names a Hub id (or a ``local_dir``), a subfolder, a
variant and a dtype. Loading goes only through diffusers / transformers ``from_pretrained``, so
the Hugging Face cache, ``HF_HOME`` and the offline flags (``HF_HUB_OFFLINE=1``) behave as users
expect. Availability checks never download: they look in the local cache only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from headgen.config.recipe import ModelSpec
from headgen.errors import ModelNotFoundError

# component -> (library, class name). A pipeline repository keeps each in its own subfolder.
COMPONENTS: dict[str, tuple[str, str]] = {
    "unet": ("diffusers", "UNet2DConditionModel"),
    "vae": ("diffusers", "AutoencoderKL"),
    "scheduler": ("diffusers", "DDPMScheduler"),
    "text_encoder": ("transformers", "CLIPTextModel"),
    "tokenizer": ("transformers", "CLIPTokenizer"),
    "controlnet": ("diffusers", "ControlNetModel"),
    "clip": ("transformers", "CLIPModel"),
    "clip_tokenizer": ("transformers", "CLIPTokenizer"),
    "clip_processor": ("transformers", "CLIPImageProcessor"),
}

# Components stored at the root of their repository (or of spec.subfolder), not in a subfolder
# named after the component.
ROOT_COMPONENTS = {"controlnet", "clip", "clip_tokenizer", "clip_processor"}


def torch_dtype(spec: ModelSpec, device: torch.device) -> torch.dtype:
    if spec.dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, spec.dtype)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _subfolder(spec: ModelSpec, component: str) -> str | None:
    parts = [p for p in (spec.subfolder, None if component in ROOT_COMPONENTS else component) if p]
    return "/".join(parts) if parts else None


def local_path(spec: ModelSpec) -> Path | None:
    """The local directory holding ``spec`` (its local_dir, or its Hub cache snapshot), else None."""
    if spec.local_dir:
        path = Path(spec.local_dir).expanduser()
        return path if path.is_dir() else None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(spec.hub_id, revision=spec.revision, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def is_available(spec: ModelSpec, components: tuple[str, ...] = ()) -> bool:
    """True when the model (and the listed components' configs) are on disk; never downloads."""
    root = local_path(spec)
    if root is None:
        return False
    for component in components:
        sub = _subfolder(spec, component)
        folder = root / sub if sub else root
        if not folder.is_dir() or not any(folder.glob("*.json")):
            return False
    return True


def how_to_get(name: str, spec: ModelSpec) -> str:
    sub = f" (subfolder {spec.subfolder})" if spec.subfolder else ""
    return (
        f"model '{name}' = {spec.hub_id}{sub} is not available locally. Download it on a machine with network "
        f"access (`hf download {spec.hub_id}` or `huggingface-cli download {spec.hub_id}`) into the Hugging Face "
        f"cache, or point models.{name}.local_dir=/path/to/{spec.hub_id.split('/')[-1]} at a copy; or run with "
        "prior=demo to use the CPU demo prior instead"
    )


def load_component(
    name: str, spec: ModelSpec, component: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> Any:
    """Load one component of a model with ``from_pretrained`` (eval mode, frozen, on ``device``)."""
    import importlib

    if component not in COMPONENTS:
        raise ValueError(f"unknown model component '{component}'; known: {', '.join(COMPONENTS)}")
    device = torch.device(device)
    library, cls_name = COMPONENTS[component]
    cls = getattr(importlib.import_module(library), cls_name)
    source = str(Path(spec.local_dir).expanduser()) if spec.local_dir else spec.hub_id
    kwargs: dict[str, Any] = {}
    sub = _subfolder(spec, component)
    if sub:
        kwargs["subfolder"] = sub
    if spec.revision and not spec.local_dir:
        kwargs["revision"] = spec.revision
    if spec.local_dir or offline():
        kwargs["local_files_only"] = True
    weights = component not in ("tokenizer", "clip_tokenizer", "scheduler", "clip_processor")
    if weights:
        kwargs["torch_dtype"] = dtype or torch_dtype(spec, device)
        if spec.variant:
            kwargs["variant"] = spec.variant
    if spec.local_dir and not Path(source).is_dir():
        raise ModelNotFoundError(f"models.{name}.local_dir={spec.local_dir} does not exist; {how_to_get(name, spec)}")
    try:
        obj = cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{how_to_get(name, spec)} (loading {component}: {exc})") from exc
    if weights:
        obj = apply_speed_options(obj.to(device).eval().requires_grad_(False), spec, component)
    return obj


def apply_speed_options(model: Any, spec: ModelSpec, component: str) -> Any:
    """The spec's channels_last, attention and compile options on a loaded network."""
    if component not in ("unet", "controlnet", "vae"):
        return model
    if spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if spec.attention == "classic":
        from diffusers.models.attention_processor import AttnProcessor

        model.set_attn_processor(AttnProcessor())
    if spec.compile and component in ("unet", "controlnet"):
        # torch.compile wraps the module (attributes such as .config still read through); the
        # wrapper's own hooks run outside the compiled graph, so bench_step can time it.
        model = torch.compile(model)
    return model
