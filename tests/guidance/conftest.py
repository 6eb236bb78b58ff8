"""Tiny random Stable-Diffusion-layout models shared by the guidance tests."""

from __future__ import annotations

import pytest

from headgen.config.recipe import ModelSpec
from headgen.models.random_init import save_random_sd
from headgen.prior.load import load_pretrained
from headgen.prior.prompts import PromptConfig


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    return save_random_sd(tmp_path_factory.mktemp("tiny") / "sd")


@pytest.fixture(scope="session")
def tiny_models(tiny_sd_dir):
    return {
        "tiny": ModelSpec(hub_id="example/tiny-sd", local_dir=str(tiny_sd_dir)),
        "tiny_cn": ModelSpec(hub_id="example/tiny-cn", local_dir=str(tiny_sd_dir.with_name("sd-controlnet")),
                             kind="controlnet"),
    }


@pytest.fixture
def tiny_backbone(tiny_models):
    return load_pretrained(tiny_models, "tiny", {"landmarks": "tiny_cn"}, PromptConfig(cache_dir=None), "cpu")


@pytest.fixture(scope="session")
def tiny_ip2p_dir(tiny_sd_dir):
    """A second tiny ControlNet (other random output weights) standing in for InstructPix2Pix."""
    import torch
    from diffusers import UNet2DConditionModel

    from headgen.models.random_init import build_controlnet

    torch.manual_seed(1)
    path = tiny_sd_dir.with_name("sd-ip2p")
    build_controlnet(UNet2DConditionModel.from_pretrained(tiny_sd_dir / "unet")).save_pretrained(path)
    return path


@pytest.fixture
def tiny_backbone_ip2p(tiny_models, tiny_ip2p_dir):
    """The tiny backbone with two ControlNets: roles "landmarks" and "ip2p"."""
    models = {**tiny_models, "tiny_ip2p": ModelSpec(hub_id="example/tiny-ip2p", local_dir=str(tiny_ip2p_dir),
                                                    kind="controlnet")}
    return load_pretrained(models, "tiny", {"landmarks": "tiny_cn", "ip2p": "tiny_ip2p"},
                           PromptConfig(cache_dir=None), "cpu")
