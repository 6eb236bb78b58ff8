"""Lifecycle hooks of the generic optimize stage, exercised by two outside plugins loaded with
``--plugin dynamic_parts`` (tests/plugins/dynamic_parts.py; no core file knows them): a representation
whose parameter set grows and shrinks every few steps, and a guidance that trains a network of its own
at its own learning rate. Both are saved in the stage checkpoint and resume bit-identically after a
SIGKILL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from runhelpers import kill_after_first_checkpoint
from safetensors.torch import load_file
from testpaths import PLUGINS, REPO

from headgen.cli import main

RECIPE = PLUGINS / "dynamic.yaml"


def launch(out: Path, capsys, *overrides: str) -> Path:
    code = main(["--plugin", "dynamic_parts", "--config", str(RECIPE), "--output-dir", str(out), *overrides])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    return Path(captured.out.strip().splitlines()[-1].removeprefix("Run directory: "))


def optimizer_steps(ckpt: Path) -> dict[str, list[int]]:
    """{parameter group name: Adam step count of each of its parameters (0: no state)} of a checkpoint."""
    opt = torch.load(ckpt, weights_only=True)["optimizer_states"][0]
    return {g["name"]: [int(opt["state"].get(i, {}).get("step", 0)) for i in g["params"]] for g in opt["param_groups"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(["--plugin", "dynamic_parts", "--config", str(RECIPE), "--output-dir",
                     str(tmp_path_factory.mktemp("dynamic")), "stages.points.steps=22"])
    assert code == 0, buf.getvalue()[-3000:]
    return Path(buf.getvalue().strip().splitlines()[-1].removeprefix("Run directory: "))


def test_representation_adds_and_removes_parameters_and_keeps_unchanged_optimizer_state(run):
    points = load_file(str(run / "stages/points/result.safetensors"))
    # 22 steps, densify after every 4th: 5 changes of +3 split -1 pruned from 12 points
    assert points["means"].shape == (12 + 5 * 2, 2) and points["colors"].shape == (22, 3)
    steps = optimizer_steps(run / "stages/points/last.ckpt")
    # the background never changed: its Adam state ran all 22 steps; the points were replaced after
    # step 20 and have 2 steps of fresh state
    assert steps == {"points": [2, 2], "background": [22]}
    metrics = (run / "stages/points/logs/metrics.csv").read_text().splitlines()
    first, last = (float(line.split(",")[2]) for line in (metrics[1], metrics[-1]))
    assert last < 0.5 * first  # the changing point set still fits the target


def test_guidance_trains_its_own_module_at_its_own_rate_and_saves_it(run):
    ckpt = torch.load(run / "stages/vsd/last.ckpt", weights_only=True)
    groups = {g["name"]: g["lr"] for g in ckpt["optimizer_states"][0]["param_groups"]}
    assert groups["lora"] == pytest.approx(0.03) and groups["points"] == pytest.approx(0.01)
    assert optimizer_steps(run / "stages/vsd/last.ckpt")["lora"] == [24, 24]
    saved = load_file(str(run / "stages/vsd/guidance.safetensors"))
    assert set(saved) == {"weight", "bias"}
    assert torch.equal(saved["weight"], ckpt["state_dict"]["guidance_module.weight"])
    # the representation kept changing in the second stage (it continues the first one's points)
    assert load_file(str(run / "stages/vsd/result.safetensors"))["means"].shape[0] == 22 + 6 * 2


def test_optimizer_groups_may_name_the_guidance_group(tmp_path, capsys):
    run = launch(tmp_path, capsys, "stages.points.steps=4", "stages.vsd.steps=2",
                 "stages.vsd.optimizer.groups={points: 0.01, lora: 0.07}")
    groups = {g["name"]: g["lr"] for g in torch.load(run / "stages/vsd/last.ckpt", weights_only=True)[
        "optimizer_states"][0]["param_groups"]}
    assert groups == pytest.approx({"points": 0.01, "lora": 0.07})  # background left out: frozen
    code = main(["--plugin", "dynamic_parts", "--config", str(RECIPE), "--output-dir", str(tmp_path / "bad"),
                 "stages.vsd.optimizer.groups={lorra: 0.1}"])
    err = capsys.readouterr().err
    assert code != 0 and "no parameter group 'lorra' (did you mean 'lora'?)" in err


@pytest.mark.parametrize("stage, other", [("points", "vsd"), ("vsd", "points")])
def test_sigkill_then_resume_is_bit_identical(stage, other, tmp_path, capsys, subprocess_env):
    """Killed mid-stage after the parameter set changed (points) or the guidance's network trained
    (vsd), --resume gives the uninterrupted run's tensors to the bit, in both stages."""
    slow = {"points": ["stages.points.guidance.sleep_s=0.08"], "vsd": ["stages.vsd.guidance.sleep_s=0.08"]}[stage]
    common = [f"stages.{stage}.checkpoint_every=1", f"stages.{stage}.steps=40"]
    reference = launch(tmp_path / "ref", capsys, *common)
    cmd = [sys.executable, str(REPO / "launch.py"), "--plugin", "dynamic_parts", "--config", str(RECIPE),
           "--output-dir", str(tmp_path / "killed"), *common, *slow]
    proc = subprocess.Popen(cmd, env=subprocess_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run, step = kill_after_first_checkpoint(proc, tmp_path / "killed", f"dynamic/*/stages/{stage}/last.ckpt", stage,
                                            timeout_s=120, settle_s=0.8)
    assert 4 <= step < 40  # at least one densification happened before the kill
    killed = torch.load(run / f"stages/{stage}/last.ckpt", weights_only=True)["state_dict"]
    assert killed["representation.means"].shape[0] != 12
    code = main(["--plugin", "dynamic_parts", "--resume", str(run)])
    assert code == 0, capsys.readouterr().err[-3000:]
    for name in (stage, other):
        resumed = load_file(str(run / f"stages/{name}/result.safetensors"))
        expected = load_file(str(reference / f"stages/{name}/result.safetensors"))
        assert resumed.keys() == expected.keys()
        assert all(torch.equal(resumed[k], expected[k]) for k in expected), name
    assert torch.equal(load_file(str(run / "stages/vsd/guidance.safetensors"))["weight"],
                       load_file(str(reference / "stages/vsd/guidance.safetensors"))["weight"])
