"""Bad input or a damaged run directory: exit 2 and one line that says what is wrong, never a traceback
(issue 20, item 8). Each case failed with a traceback before its fix."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file
from testpaths import TOY_RECIPE

from headgen.cli import main

QUICK = ["stages.fit.steps=2", "stages.polish.steps=1"]


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["--plugin", "toy_parts", *args])
    return code, out.getvalue(), err.getvalue()


def one_message(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and expected in err, err


@pytest.fixture
def toy_run(tmp_path) -> Path:
    code, out, err = cli("--config", str(TOY_RECIPE), "--output-dir", str(tmp_path / "runs"), *QUICK)
    assert code == 0, err
    return Path(out.strip().splitlines()[-1].removeprefix("Run directory: "))


def test_output_dir_that_cannot_hold_runs(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    code, _, err = cli("--config", str(TOY_RECIPE), "--output-dir", str(tmp_path / "a-file"), *QUICK)
    one_message(code, err, f"--output-dir {tmp_path / 'a-file'}: cannot create the run directory")
    code, _, err = cli("--config", str(TOY_RECIPE), "--output-dir", "/proc/headgen-test", *QUICK)
    one_message(code, err, "--output-dir /proc/headgen-test: cannot create the run directory")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stages.fit[0]=3", "override 'stages.fit[0]': unknown stage 'fit[0]' (did you mean 'fit'?)"),
        ("prompt= \n\t \n", "prompt is empty"),
        ("prompt=", "prompt is empty"),
    ],
)
def test_bad_overrides(tmp_path, override, message):
    code, _, err = cli("--config", str(TOY_RECIPE), "--output-dir", str(tmp_path), override, *QUICK)
    one_message(code, err, message)


def test_a_recipe_whose_prompt_has_no_value_says_it_is_empty(tmp_path):
    recipe = tmp_path / "blank.yaml"
    recipe.write_text(f"extends: [{TOY_RECIPE}]\nprompt:\n")
    code, _, err = cli("--config", str(recipe), "--output-dir", str(tmp_path), *QUICK)
    one_message(code, err, "prompt is empty: describe the head")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "stages/polish/last.ckpt").write_bytes(b""), "last.ckpt does not match its checksum"),
        (lambda r: (r / "stages/polish/last.ckpt").write_bytes((r / "stages/polish/last.ckpt").read_bytes()[:300]),
         "last.ckpt does not match its checksum"),
        (lambda r: (r / "state.json").write_text("[]"), "state.json is damaged: it holds a list, not an object"),
        (lambda r: (r / "state.json").write_text(
            json.dumps({k: v for k, v in json.loads((r / "state.json").read_text()).items() if k != "stages"})),
         "state.json is damaged: 'stages' is missing"),
        (lambda r: (r / "config.yaml").write_text("stages: [unclosed\n  - {"),
         "config.yaml is not a readable YAML file"),
        (lambda r: (r / "config.yaml").write_text("- a list\n"),
         "config.yaml must hold a mapping of settings, not list"),
    ],
)
def test_a_damaged_run_directory_is_one_message_on_resume(toy_run, damage, message):
    state = json.loads((toy_run / "state.json").read_text())
    state["stages"]["polish"]["status"] = "running"  # killed during polish: --resume reads its last.ckpt
    state["stages"]["export"]["status"] = "pending"
    (toy_run / "state.json").write_text(json.dumps(state))
    damage(toy_run)
    code, _, err = cli("--resume", str(toy_run))
    one_message(code, err, message)


def test_a_result_missing_a_tensor_is_one_message(toy_run):
    path = toy_run / "stages/polish/result.safetensors"
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    tensors.popitem()
    save_file(tensors, str(path), metadata=header)
    code, _, err = cli("--export", str(toy_run))
    one_message(code, err, "result.safetensors does not match its recorded checksum")


def test_an_edit_whose_source_config_is_not_yaml(toy_run, tmp_path):
    (toy_run / "config.yaml").write_text("name: [")
    edit = tmp_path / "edit.yaml"
    edit.write_text(f"extends: [{TOY_RECIPE.parent / 'toy_edit.yaml'}]\n")
    code, _, err = cli("--config", str(edit), "--output-dir", str(tmp_path), f"source={toy_run}")
    one_message(code, err, f"{toy_run / 'config.yaml'} is not a readable YAML file")


def test_plugins_that_fail_are_named_with_the_line(tmp_path, monkeypatch):
    (tmp_path / "broken_at_import.py").write_text("x = 1\nraise ValueError('no licence key')\n")
    (tmp_path / "bad_syntax.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = cli("--plugin", "broken_at_import", "--list")
    one_message(code, err, "--plugin broken_at_import: importing it failed: ValueError: no licence key (at ")
    assert "broken_at_import.py:2, in <module>)" in err
    code, _, err = cli("--plugin", "bad_syntax", "--list")
    one_message(code, err, "--plugin bad_syntax: importing it failed: SyntaxError")
    # a plugin part that raises mid-run: which plugin, which line, which stage
    code, _, err = cli("--config", str(TOY_RECIPE), "--output-dir", str(tmp_path / "runs"), *QUICK,
                       "stages.fit.guidance.fail_at_call=1")
    one_message(code, err,
                "a plugin part failed in stage 'fit': RuntimeError: toy failure on call 1 (plugin toy_parts, ")
    assert "toy_parts.py:" in err and " in __call__); --verbose shows the traceback" in err
