"""Tiny random Stable-Diffusion-layout models shared by the guidance tests."""

from __future__ import annotations

import pytest

from guidance.factory import load_pretrained
from guidance.prompts import PromptConfig
from headgen.config.recipe import ModelSpec
from headgen.models.random_init import save_random_sd


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
