"""Tiny Stable Diffusion parts and a small demo UV data set shared by the training tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """A tiny random Stable-Diffusion-layout folder (save_pretrained), the base the trainers start from."""
    from headgen.models.random_init import save_random_sd

    return save_random_sd(tmp_path_factory.mktemp("tiny") / "sd", controlnet=False)


@pytest.fixture(scope="session")
def uv_demo(tmp_path_factory):
    """``texture-data --demo`` on the ICT-FaceKit atlas: 6 textures of 64 px (2 undesired, 4 triples)."""
    from headgen.train.texture_data import make_demo

    return make_demo(tmp_path_factory.mktemp("uv") / "demo", count=6, size=64, head="ict-facekit", progress=False)
