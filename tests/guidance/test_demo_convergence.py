"""Under the demo prior, guidance drives a fixed-geometry texture toward the prompt's target.

Thresholds come from measured behaviour (benchmarks/bench_guidance_quality.py; figures in the
issue notes): SDS at CFG 7.5 reaches ~27 dB in 100 steps at 128 px from a grey start (~23 dB: the
white background already matches).
"""

from __future__ import annotations

import pytest

from headgen.config import build
from headgen.prior.demo.experiments import TextureFit, fit_texture
from headgen.prior.demo.world import DemoWorld

PROMPT = "an old man with a grey beard"


@pytest.fixture(scope="module")
def world():
    head = build("head", {"type": "builtin"}).load()
    return DemoWorld(head, PROMPT)


def test_sds_texture_fit_reaches_25_db(world):
    start, end = fit_texture(world, TextureFit("sds", {"cfg": 7.5}, steps=100))
    assert end > 25.0, (start, end)
    assert end > start + 2.0


def test_controlnet_sds_moves_toward_target(world):
    start, end = fit_texture(world, TextureFit("controlnet-sds", {"cfg": 7.5, "controlnet": "cn"}, steps=60,
                                               landmarks=True))
    assert end > start + 2.0, (start, end)


def test_ssd_raises_psnr_above_start(world):
    # SSD's gradient is (w - 1)(eps_c - eps_u): it stops once the unconditional posterior recognises the
    # target (a property of an exact prior), so the bar is "clearly above the start", not SDS's.
    start, end = fit_texture(world, TextureFit("ssd", {"cfg": 7.5, "controlnet": "cn"}, steps=60, landmarks=True))
    assert end > start + 1.0, (start, end)
