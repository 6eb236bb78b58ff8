"""Full-size stand-ins for the pretrained models: the real architectures with random weights.

``launch.py --dry-run`` runs a recipe on these, so that everything that depends on the real
models' sizes (channel counts, cross-attention widths 768 vs 1024, ControlNet conditioning, the
VAE's 8x factor and scaling, dtypes, memory) is exercised without any download. Each architecture
is built from the values of the public model's ``config.json`` (cited beside it), saved with
``save_pretrained`` under ``$HEADGEN_CACHE_DIR/full-size-random/`` (never the Hugging Face cache,
so ``prior: auto`` cannot take them for real weights) and loaded back through the normal
``from_pretrained`` path. A ``RANDOM_WEIGHTS`` marker file in each folder makes a run that is not a
dry run refuse them.

Weights are saved in float16 (half the disk: about 10 GB for every model of every recipe) and
loaded in the dtype the model spec asks for (float32 on CPU). The tokenizer is headgen's
character-level CLIP tokenizer (:func:`headgen.models.random_init.write_char_tokenizer`): the
real BPE vocabulary is not installable without open-clip-torch, whose torchvision dependency has
no CPU wheel here. The text encoders keep the real vocabulary size (49408) and 77 positions; their
begin/end token ids are the character tokenizer's (512/513 instead of 49406/49407), so pooling
finds the end token as with the real tokenizer.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from headgen.cache import resolve_cache_dir
from headgen.config.recipe import ModelSpec
from headgen.errors import ModelNotFoundError
from headgen.models.architectures import (
    CLIP_B32_TEXT,
    CLIP_B32_VISION,
    CLIP_L14_TEXT,
    CLIP_L14_VISION,
    OPENCLIP_H_TEXT,
    SD15_UNET,
    SD21_UNET,
    SD_SCHEDULER,
    SD_VAE,
    UNET_ENCODER_KEYS,
)
from headgen.models.random_init import write_char_tokenizer

MARKER = "RANDOM_WEIGHTS"
"""A file in every folder written here; its presence means "not real weights"."""

CACHE = "$HEADGEN_CACHE_DIR/full-size-random"

# --- builders --------------------------------------------------------------------------------------

def _controlnet_config(unet: dict[str, Any]) -> dict[str, Any]:
    return {**{k: unet[k] for k in UNET_ENCODER_KEYS if k in unet},
            "conditioning_embedding_out_channels": (16, 32, 96, 256)}


def _save(model: Any, folder: Path) -> None:
    model.to(torch.float16).save_pretrained(folder, safe_serialization=True)


def _text_config(values: dict[str, Any]) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(**values)


def _stable_diffusion(unet: dict[str, Any], text: dict[str, Any]) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel

        _save(UNet2DConditionModel(**unet), folder / "unet")
        _save(AutoencoderKL(**SD_VAE), folder / "vae")
        _save(CLIPTextModel(_text_config(text)), folder / "text_encoder")
        write_char_tokenizer(folder / "tokenizer")
        DDPMScheduler(**SD_SCHEDULER).save_pretrained(folder / "scheduler")
        (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))

    return build


def _controlnet(unet: dict[str, Any]) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        from diffusers import ControlNetModel

        net = ControlNetModel(**_controlnet_config(unet))
        # Trained ControlNets have non-zero output convolutions; freshly initialised ones are zero and
        # would leave the UNet's prediction unchanged, hiding a mis-wired residual.
        with torch.no_grad():
            for module in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
                for p in module.parameters():
                    p.normal_(0.0, 0.02)
        _save(net, folder)

    return build


def _clip(text: dict[str, Any], vision: dict[str, Any]) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig

        config = CLIPConfig(text_config=_text_config(text).to_dict(),
                            vision_config=CLIPVisionConfig(**vision).to_dict(), projection_dim=text["projection_dim"])
        _save(CLIPModel(config), folder)
        write_char_tokenizer(folder)
        # openai/clip-vit-*: preprocessor_config.json (bicubic resize of the short side, centre crop).
        CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(
            folder)

    return build


ARCHITECTURES: dict[str, Callable[[Path], None]] = {
    "sd15": _stable_diffusion(SD15_UNET, CLIP_L14_TEXT),
    "sd21-base": _stable_diffusion(SD21_UNET, OPENCLIP_H_TEXT),
    # DreamFace's texture LDM: SD 1.5 fine-tuned with a fifth input channel (the non-face mask).
    "sd15-texture": _stable_diffusion({**SD15_UNET, "in_channels": 5}, CLIP_L14_TEXT),
    "controlnet-sd15": _controlnet(SD15_UNET),
    "controlnet-sd21": _controlnet(SD21_UNET),
    "clip-vit-l14": _clip(CLIP_L14_TEXT, CLIP_L14_VISION),
    "clip-vit-b32": _clip(CLIP_B32_TEXT, CLIP_B32_VISION),
}

# (hub_id, subfolder) -> architecture, for the models of configs/models.yaml and common aliases.
HUB_ARCHITECTURES: dict[tuple[str, str | None], str] = {
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", None): "sd15",
    ("runwayml/stable-diffusion-v1-5", None): "sd15",
    ("stabilityai/stable-diffusion-2-1-base", None): "sd21-base",
    ("dreamface/texture-ldm-unreleased", None): "sd15-texture",
    ("CrucibleAI/ControlNetMediaPipeFace", "diffusion_sd15"): "controlnet-sd15",
    ("CrucibleAI/ControlNetMediaPipeFace", None): "controlnet-sd21",
    ("lllyasviel/control_v11e_sd15_ip2p", None): "controlnet-sd15",
    ("openai/clip-vit-large-patch14", None): "clip-vit-l14",
    ("openai/clip-vit-base-patch32", None): "clip-vit-b32",
}


def architecture(name: str, spec: ModelSpec) -> str:
    """The full-size architecture standing in for model ``name``."""
    key = (spec.hub_id, spec.subfolder)
    if key not in HUB_ARCHITECTURES:
        raise ModelNotFoundError(
            f"--dry-run: no full-size architecture is known for model '{name}' ({spec.hub_id}"
            f"{', subfolder ' + spec.subfolder if spec.subfolder else ''}); add it to HUB_ARCHITECTURES in "
            "headgen/models/full_size.py"
        )
    return HUB_ARCHITECTURES[key]


def _version(arch: str) -> str:
    """Changes when the builder or its configs change, so a stale folder is rebuilt, not reused."""
    configs = [SD15_UNET, SD21_UNET, SD_VAE, SD_SCHEDULER, CLIP_L14_TEXT, OPENCLIP_H_TEXT, CLIP_L14_VISION,
               CLIP_B32_TEXT, CLIP_B32_VISION]
    builders = [_save, _stable_diffusion, _controlnet, _controlnet_config, _clip, write_char_tokenizer]
    text = "\n".join([arch, *map(repr, configs), *map(inspect.getsource, builders)])
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def is_random(folder: str | Path) -> bool:
    """Whether ``folder`` (or its parent, for a subfolder model) holds weights written here."""
    path = Path(folder).expanduser()
    return (path / MARKER).is_file() or (path.parent / MARKER).is_file()


def ensure_full_size(name: str, spec: ModelSpec, log: Callable[[str], None] = print) -> Path:
    """The folder to use as ``local_dir`` for ``spec``'s full-size random stand-in (built once)."""
    arch = architecture(name, spec)
    root = resolve_cache_dir(CACHE)
    layout = f"-in-{spec.subfolder.replace('/', '-')}" if spec.subfolder else ""
    folder = root / f"{arch}{layout}-{_version(arch)}"
    if (folder / MARKER).is_file():
        return folder
    from filelock import FileLock

    root.mkdir(parents=True, exist_ok=True)
    # Two processes on one cache (two dry runs, test workers) build it once: the second waits.
    with FileLock(str(folder) + ".lock"):
        if not (folder / MARKER).is_file():
            _build(name, spec, arch, folder, log)
    return folder


def _build(name: str, spec: ModelSpec, arch: str, folder: Path, log: Callable[[str], None]) -> None:
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    target = partial / spec.subfolder if spec.subfolder else partial
    target.mkdir(parents=True)
    log(f"building the full-size random-weight {arch} for '{name}' into {folder} (once)")
    torch.manual_seed(0)
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its fp16-cast advice is for loading, not for writing weights
    try:
        ARCHITECTURES[arch](target)
    finally:
        diffusers_logging.set_verbosity(level)
    (partial / MARKER).write_text(
        f"Random weights with the architecture of {spec.hub_id} (headgen --dry-run). Not a trained model.\n"
    )
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
