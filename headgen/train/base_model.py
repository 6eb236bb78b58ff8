"""The pretrained model a training command starts from: a name of configs/models.yaml, or a folder."""

from __future__ import annotations

from pathlib import Path

from headgen.config.recipe import ModelSpec
from headgen.errors import HeadgenError


def base_model(model: str, pretrained: str | Path | None) -> tuple[str, ModelSpec]:
    """(name, spec) of ``--model`` (under ``models:`` of configs/models.yaml), its location replaced
    by ``--pretrained`` when given (a local Stable Diffusion folder: unet/, vae/, text_encoder/,
    tokenizer/, scheduler/)."""
    from headgen.config.compose import compose

    models = compose("configs/models.yaml", [])["models"]
    if model not in models:
        raise HeadgenError(f"--model {model}: not in configs/models.yaml ({', '.join(models)}); or give a local "
                           "folder with --pretrained PATH")
    spec = dict(models[model])
    if pretrained is not None:
        path = Path(pretrained).expanduser()
        if not path.is_dir():
            raise HeadgenError(f"--pretrained {pretrained}: no such folder (a Stable Diffusion folder with unet/, "
                               "vae/, text_encoder/, tokenizer/, scheduler/)")
        spec["local_dir"] = str(path.resolve())
    return model, ModelSpec(**spec)


def is_random_base(spec: ModelSpec) -> bool:
    """Whether the base is a full-size random stand-in (``--dry-run``'s): what is trained from it
    carries the same marker, so a real run refuses it too."""
    from headgen.models.full_size import is_random

    return bool(spec.local_dir) and is_random(spec.local_dir)


def mark_random(folder: Path) -> None:
    from headgen.models.full_size import MARKER

    (folder / MARKER).write_text("Trained from random weights (a --dry-run stand-in). Not a usable model.\n")
