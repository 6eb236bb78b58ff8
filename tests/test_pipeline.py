"""The stage pipeline end to end on a toy representation loaded as an outside plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from runhelpers import kill_after_first_checkpoint
from safetensors.torch import load_file
from testpaths import PLUGINS, REPO, TOY_RECIPE

from headgen.cli import main


def run_cli(args, capsys) -> tuple[int, str, str]:
    code = main(["--plugin", "toy_parts", *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_dir_from(out: str) -> Path:
    last = out.strip().splitlines()[-1]
    assert last.startswith("Run directory: "), last
    return Path(last[len("Run directory: ") :])


def launch_toy(tmp_path, capsys, *overrides) -> Path:
    code, out, err = run_cli(["--config", str(TOY_RECIPE), "--output-dir", str(tmp_path), *overrides], capsys)
    assert code == 0, err
    return run_dir_from(out)


def test_toy_run_writes_complete_run_directory(tmp_path, capsys):
    run = launch_toy(tmp_path, capsys)
    assert run.parent.parent == tmp_path and run.parent.name == "toy"
    assert run.name.startswith("a-toy-target@")
    for rel in ("config.yaml", "state.json", "summary.json", "assets/toy.png",
                "stages/fit/last.ckpt", "stages/fit/result.safetensors", "stages/fit/logs/metrics.csv",
                "stages/polish/result.safetensors"):
        assert (run / rel).is_file(), rel
    assert list((run / "stages/fit/logs").glob("events.out.tfevents.*")), "no TensorBoard log"
    summary = json.loads((run / "summary.json").read_text())
    for key in ("method", "prompt", "seed", "prior", "device", "stages", "peak_memory_mb", "assets", "metrics"):
        assert key in summary, key
    assert [s["name"] for s in summary["stages"]] == ["fit", "polish", "export"]
    assert summary["stages"][0]["steps"] == 30 and summary["stages"][0]["seconds"] > 0
    assert summary["assets"] == {"image": "assets/toy.png"}
    assert summary["finished"] is True and summary["peak_memory_mb"]["cpu_rss"] > 0
    # The toy image was actually fitted: the final loss is far below the initial one.
    import csv

    rows = list(csv.DictReader(open(run / "stages/fit/logs/metrics.csv")))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert losses[-1] < 0.2 * losses[0]
    assert summary["metrics"]["polish/final_loss"] < 5e-3
    # No temp files are left behind by atomic writes.
    assert not list(run.rglob("*.tmp*"))


def test_same_seed_same_tensors_and_different_seed_differs(tmp_path, capsys):
    a = load_file(str(launch_toy(tmp_path / "a", capsys) / "stages/fit/result.safetensors"))
    b = load_file(str(launch_toy(tmp_path / "b", capsys) / "stages/fit/result.safetensors"))
    c = load_file(str(launch_toy(tmp_path / "c", capsys, "--seed", "3") / "stages/fit/result.safetensors"))
    assert torch.equal(a["image"], b["image"])
    assert not torch.equal(a["image"], c["image"])


def test_kill_mid_stage_then_resume_equals_uninterrupted(tmp_path, capsys, subprocess_env):
    slow = ["stages.fit.steps=40", "stages.fit.checkpoint_every=1", "stages.fit.guidance.sleep_s=0.08"]
    reference = launch_toy(tmp_path / "ref", capsys, *slow[:2])
    cmd = [sys.executable, str(REPO / "launch.py"), "--plugin", "toy_parts", "--config", str(TOY_RECIPE),
           "--output-dir", str(tmp_path / "killed"), *slow]
    proc = subprocess.Popen(cmd, env=subprocess_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run, step_at_kill = kill_after_first_checkpoint(proc, tmp_path / "killed", "toy/*/stages/fit/last.ckpt", "fit",
                                                    timeout_s=120, settle_s=0.6)
    assert 0 < step_at_kill < 40
    code, out, err = run_cli(["--resume", str(run)], capsys)
    assert code == 0, err
    assert "resuming toy at stage 'fit'" in out
    for stage in ("fit", "polish"):
        resumed = load_file(str(run / f"stages/{stage}/result.safetensors"))
        expected = load_file(str(reference / f"stages/{stage}/result.safetensors"))
        assert torch.equal(resumed["image"], expected["image"]), stage
    assert json.loads((run / "summary.json").read_text())["finished"] is True


def test_resume_and_export_errors(tmp_path, capsys):
    code, _, err = run_cli(["--resume", str(tmp_path / "nope")], capsys)
    assert code == 2 and "no such run directory" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["--resume", str(tmp_path / "empty")], capsys)
    assert code == 2 and "not a headgen run directory" in err
    # A run killed before its first checkpoint holds nothing to resume.
    run = launch_toy(tmp_path, capsys)
    state = json.loads((run / "state.json").read_text())
    for entry in state["stages"].values():
        entry["status"] = "pending"
    (run / "state.json").write_text(json.dumps(state))
    (run / "stages/fit/last.ckpt").unlink()
    code, _, err = run_cli(["--resume", str(run)], capsys)
    assert code == 2 and "holds no checkpoint" in err
    code, _, err = run_cli(["--export", str(run)], capsys)
    assert code == 2 and "is not finished" in err
    code, _, err = run_cli(["--resume", str(run), "--seed", "3"], capsys)
    assert code == 2 and "cannot be combined with --resume" in err


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    run = launch_toy(tmp_path, capsys)
    (run / "stages/fit/result.safetensors").write_bytes(b"garbage")
    code, _, err = run_cli(["--export", str(run)], capsys)
    # export loads the latest result (polish), which is intact; corrupt that one too
    assert code == 0, err
    (run / "stages/polish/result.safetensors").write_bytes(b"garbage")
    code, _, err = run_cli(["--export", str(run)], capsys)
    assert code == 2 and "missing or corrupt" in err


def test_export_reexports_finished_run(tmp_path, capsys):
    run = launch_toy(tmp_path, capsys)
    png = run / "assets/toy.png"
    png.unlink()
    code, out, err = run_cli(["--export", str(run)], capsys)
    assert code == 0, err
    assert png.is_file() and run_dir_from(out) == run


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys):
    code, out, err = run_cli(
        ["--config", str(TOY_RECIPE), "--output-dir", str(tmp_path), "stages.fit.optimizer.lr=[5, 0.05, 1e30, 5]",
         "stages.fit.optimizer.name=sgd", "stages.fit.checkpoint_every=1"], capsys)
    assert code == 2
    assert "the loss is not finite" in err and "Traceback" not in err
    ckpt = next(tmp_path.glob("toy/*/stages/fit/last.ckpt"))
    state = torch.load(ckpt, weights_only=True)
    # good: the step after it computed a finite loss. The 7th update used lr 1e30 (the schedule's value
    # after step 5 counted from 0); the loss after it overflowed, so the state after 6 updates is kept.
    assert state["global_step"] == 6 and all(v.abs().max() < 10 for v in state["state_dict"].values())
    assert "last good checkpoint is kept" in err
    assert not (ckpt.parent / "last.ckpt.next").exists()
    # the advice works: --resume with the lower learning rate the message suggests finishes the run
    assert "--resume RUN stages.fit.optimizer.lr=" in err
    run = ckpt.parents[2]
    code, out, err = run_cli(["--resume", str(run), "stages.fit.optimizer.lr=0.05"], capsys)
    assert code == 0, err
    assert "config.yaml updated: stages.fit.optimizer.lr" in out
    assert yaml.safe_load((run / "config.yaml").read_text())["stages"]["fit"]["optimizer"]["lr"] == 0.05
    assert json.loads((run / "state.json").read_text())["overrides"][0]["changed"] == ["stages.fit.optimizer.lr=0.05"]


def test_resume_overrides_change_only_what_is_still_to_come(tmp_path, capsys):
    """--resume RUN key=value: the new value applies from the first resumed step; settings of finished
    stages, of the whole run, or fixed by the checkpoint are refused with the reason."""
    runs = {}
    for name in ("plain", "faster"):
        run = launch_toy(tmp_path / name, capsys, "stages.fit.checkpoint_every=1", "stages.fit.steps=12")
        state = json.loads((run / "state.json").read_text())
        for stage in ("fit", "polish", "export"):
            state["stages"][stage]["status"] = "pending"
        state["stages"]["fit"]["status"] = "running"
        (run / "state.json").write_text(json.dumps(state))
        runs[name] = run
    refused = {
        "seed=3": "'seed': only settings of unfinished stages can change",
        "stages.fit.representation.size=8": "stage 'fit' continues from its checkpoint, which fixes this setting",
        "stages.fit.optimizer.name=sgd": "continues from its checkpoint",
        "stages.nope.steps=3": "stages.nope is not a group of settings of this run",
        "stages.fit.optimizer.lr=-1": "a learning rate must be >= 0",
    }
    before = (runs["plain"] / "config.yaml").read_text()
    for override, message in refused.items():
        code, _, err = run_cli(["--resume", str(runs["plain"]), override], capsys)
        assert code == 2 and message in err and "Traceback" not in err, (override, err)
    assert (runs["plain"] / "config.yaml").read_text() == before, "a refused override changed config.yaml"
    # the runs' checkpoints are at the end of fit (step 12): both continue fit to step 20
    code, _, err = run_cli(["--resume", str(runs["plain"]), "stages.fit.steps=20"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["--resume", str(runs["faster"]), "stages.fit.optimizer.lr=0.2",
                              "stages.polish.steps=4", "stages.fit.steps=20"], capsys)
    assert code == 0, err
    assert "config.yaml updated: stages.fit.optimizer.lr, stages.fit.steps, stages.polish.steps" in out
    a = load_file(str(runs["plain"] / "stages/fit/result.safetensors"))
    b = load_file(str(runs["faster"] / "stages/fit/result.safetensors"))
    assert not torch.equal(a["image"], b["image"]), "the new learning rate was not applied"
    summary = json.loads((runs["faster"] / "summary.json").read_text())
    assert [s["steps"] for s in summary["stages"] if s["name"] == "polish"] == [4]
    code, _, err = run_cli(["--resume", str(runs["faster"]), "stages.fit.steps=20"], capsys)
    assert code == 2 and "every stage is done" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "methods/does-not-exist.yaml"], "recipe file not found"),
        (["--config", str(TOY_RECIPE), "stages.fitt.steps=3"], "unknown stage 'fitt' (did you mean 'fit'?)"),
        (["--config", str(TOY_RECIPE), 'prompt=""'], "prompt is empty"),
        (["--config", str(TOY_RECIPE), "stages.fit.guidance.type=sds-typo"], "unknown guidance 'sds-typo'"),
        (["--config", str(TOY_RECIPE), "stages.fit.stepz=3"], "unknown key 'stages.fit.stepz' (did you mean 'steps'?)"),
        (["--config", str(TOY_RECIPE), "stages.fit.steps=abc"], "stages.fit.steps: expected int, got str 'abc'"),
        (["--config", str(TOY_RECIPE), "stages.fit.losses.lambda_fitt=1"], "no guidance loss or regulariser named"),
        (["--config", str(TOY_RECIPE), "--device", "cuda:7"], "--device cuda:7"),
    ],
)
def test_bad_input_gives_clear_error_without_traceback(tmp_path, capsys, args, message):
    code, _, err = run_cli([*args, "--output-dir", str(tmp_path)], capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_verbose_shows_traceback(tmp_path, capsys):
    code, _, err = run_cli(["--config", "methods/does-not-exist.yaml", "--verbose"], capsys)
    assert code == 2 and "Traceback" in err


def test_list_shows_every_kind(capsys):
    code, out, _ = run_cli(["--list"], capsys)
    assert code == 0
    for line in ("stage:", "guidance:", "representation:", "renderer:", "cameras:", "exporter:",
                 "toy-target", "optimize", "Optimise a representation"):
        assert line in out
    code, out, _ = run_cli(["--describe", "guidance/toy-target"], capsys)
    assert code == 0 and "sleep_s: float = 0.0  # Seconds to sleep per call" in out


def test_atomic_write_makes_ordinary_files(tmp_path):
    import os

    from headgen.rundir import atomic_write_text

    path = atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert path.read_text() == "x" and (path.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_load_stage_starts_from_a_finished_run_and_leaves_it_untouched(tmp_path, capsys):
    import hashlib

    from testpaths import PLUGINS

    source = launch_toy(tmp_path / "src", capsys)

    def checksums(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    before = checksums(source)
    code, out, err = run_cli(["--config", str(PLUGINS / "toy_edit.yaml"), "--output-dir", str(tmp_path / "edit"),
                              f"source={source}"], capsys)
    assert code == 0, err
    edited = run_dir_from(out)
    assert edited != source and checksums(source) == before
    loaded = load_file(str(source / "stages/polish/result.safetensors"))["image"]
    refined = load_file(str(edited / "stages/refine/result.safetensors"))["image"]
    assert refined.shape == loaded.shape and (refined - loaded).abs().max() < 0.1  # continued, not restarted
    summary = json.loads((edited / "summary.json").read_text())
    assert summary["metrics"]["source/source_stage"] == "polish"
    code, _, err = run_cli(["--config", str(PLUGINS / "toy_edit.yaml"), "--output-dir", str(tmp_path / "e2")], capsys)
    assert code == 2 and "pass source=RUN_DIR" in err


def test_overrides_may_come_before_and_after_options(tmp_path, capsys):
    code, out, err = run_cli(["--config", str(TOY_RECIPE), "seed=5", "--output-dir", str(tmp_path),
                              "prompt=a toy written twice", "--seed", "5"], capsys)
    assert code == 0, err
    summary = json.loads((run_dir_from(out) / "summary.json").read_text())
    assert summary["prompt"] == "a toy written twice" and summary["seed"] == 5


def test_progress_bar_updates_every_step_on_a_terminal_and_about_20_times_in_a_log(tmp_path, capsys):
    from headgen.stages.callbacks import LOG_UPDATES, refresh_every

    assert refresh_every(20000, interactive=True) == 1
    assert refresh_every(20000, interactive=False) == 1000
    assert refresh_every(30, interactive=False) == 2 and refresh_every(5, interactive=False) == 1
    # Captured output is not a terminal: a 200-step stage writes about LOG_UPDATES bar updates
    # (each ends with the step count it reached), not 200.
    code, out, err = run_cli(["--config", str(TOY_RECIPE), "--output-dir", str(tmp_path),
                              "stages.fit.steps=200", "stages.fit.checkpoint_every=100"], capsys)
    assert code == 0, err
    text = out + err
    updates = {int(n) for n in __import__("re").findall(r"\[fit\]:[^\r\n]*?\| *(\d+)/200", text)}
    assert 200 in updates and len(updates) <= LOG_UPDATES + 3, sorted(updates)


def test_a_run_directory_in_use_is_not_entered_twice(tmp_path, capsys):
    """While one process works in a run directory (its OS lock on .lock), a second --resume or --export
    of it stops at once naming the holder; once released, it runs."""
    from headgen.rundir import RunDir

    run = launch_toy(tmp_path, capsys)
    with RunDir(run).lock("resume"):
        code, _, err = run_cli(["--export", str(run)], capsys)
        assert code == 2, err
        assert f"the run directory is in use by headgen process {os.getpid()} (resume, since" in err
    code, _, err = run_cli(["--export", str(run)], capsys)
    assert code == 0, err


def test_a_missing_stage_result_is_named_not_replaced_by_an_earlier_one(tmp_path, capsys):
    """--export needs the last finished stage's result: without it the export stops naming the file
    (it used to export the stage before's result instead)."""
    run = launch_toy(tmp_path, capsys)
    (run / "stages/polish/result.safetensors").unlink()
    code, _, err = run_cli(["--export", str(run)], capsys)
    assert code == 2, err
    message = "stage 'polish' is finished but its result (stages/polish/result.safetensors and result.json) is missing"
    assert message in err


def test_a_checkpoint_of_another_stage_or_run_is_refused_on_resume(tmp_path, capsys):
    """Every checkpoint records its stage, method and run and has a checksum: one copied from another
    stage's folder (with its checksum file) or another run, or changed by one byte, is not resumed from."""
    run = launch_toy(tmp_path / "a", capsys, "stages.polish.checkpoint_every=1")
    other = launch_toy(tmp_path / "b", capsys, "stages.polish.checkpoint_every=1")
    state = json.loads((run / "state.json").read_text())
    state["stages"]["polish"]["status"] = "running"
    state["stages"]["export"]["status"] = "pending"
    (run / "state.json").write_text(json.dumps(state))
    polish = run / "stages/polish"
    own = {n: (polish / n).read_bytes() for n in ("last.ckpt", "last.ckpt.sha256")}

    def resume_with(source: Path) -> str:
        for name in own:
            (polish / name).write_bytes((source / name).read_bytes())
        code, _, err = run_cli(["--resume", str(run)], capsys)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        return err

    err = resume_with(run / "stages/fit")
    assert "stages/polish/last.ckpt was written by stage 'fit', not 'polish' (copied from another stage or run?)" in err
    err = resume_with(other / "stages/polish")
    assert "stages/polish/last.ckpt was written by run" in err
    for name, data in own.items():
        (polish / name).write_bytes(data)
    flipped = bytearray(own["last.ckpt"])
    flipped[len(flipped) // 2] ^= 0x10
    (polish / "last.ckpt").write_bytes(bytes(flipped))
    code, _, err = run_cli(["--resume", str(run)], capsys)
    assert code == 2 and "last.ckpt does not match its checksum (last.ckpt.sha256)" in err, err
    assert "remove it and last.ckpt.sha256 to restart stage 'polish'" in err


def test_editing_an_unfinished_source_run_is_refused_unless_a_stage_is_named(tmp_path, capsys):
    source = launch_toy(tmp_path / "source", capsys)
    state = json.loads((source / "state.json").read_text())
    state["stages"]["polish"]["status"] = "running"  # killed during polish
    state["stages"]["export"]["status"] = "pending"
    (source / "state.json").write_text(json.dumps(state))
    edit = ["--config", str(PLUGINS / "toy_edit.yaml"), "--output-dir", str(tmp_path / "edit"), f"source={source}"]
    code, _, err = run_cli(edit, capsys)
    assert code == 2, err
    assert f"the source run {source} is not finished (stage 'polish' is running): finish it with --resume" in err
    assert "or start from a finished stage with stages.source.stage=fit" in err
    code, out, err = run_cli([*edit, "stages.source.stage=fit"], capsys)
    assert code == 0, err


def test_resuming_an_edit_run_restores_its_source(tmp_path, capsys):
    """An edit run killed after its load stage resumes: the load stage (read-only on the source) runs
    again, so the stage being resumed has the head to continue and the frozen source to render."""
    source = launch_toy(tmp_path / "source", capsys)
    edit = ["--config", str(PLUGINS / "toy_edit.yaml"), "--output-dir", str(tmp_path / "edit"), f"source={source}"]
    code, out, err = run_cli(edit, capsys)
    assert code == 0, err
    run = run_dir_from(out)
    expected = load_file(str(run / "stages/refine/result.safetensors"))["image"]
    state = json.loads((run / "state.json").read_text())
    state["stages"]["refine"]["status"] = "running"  # as if killed at its last checkpoint
    (run / "state.json").write_text(json.dumps(state))
    code, out, err = run_cli(["--resume", str(run)], capsys)
    assert code == 0, err
    assert torch.equal(load_file(str(run / "stages/refine/result.safetensors"))["image"], expected)
