"""Recipes: typed validation, extends, overrides, schedules, and their error messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from headgen.config import Schedule, parse, value_at
from headgen.config.compose import compose
from headgen.config.recipe import validate
from headgen.config.typed import describe, to_plain
from headgen.errors import ConfigError


@dataclass
class Inner:
    cfg: float = 7.5
    """Classifier-free guidance scale."""
    t_range: tuple[float, float] = (0.02, 0.98)


@dataclass
class Outer:
    steps: int = 10
    lr: float | Schedule = 1e-3
    mode: Literal["a", "b"] = "a"
    inner: Inner = field(default_factory=Inner)
    weights: dict[str, float | Schedule] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    maybe: int | None = None


def test_parse_fills_defaults_and_converts():
    out = parse(Outer, {"steps": 5, "lr": [0, 1.0, 0.0, 10], "inner": {"cfg": 100}, "weights": {"lambda_x": 2}})
    assert out.steps == 5 and out.inner.cfg == 100.0 and isinstance(out.inner.cfg, float)
    assert out.lr == Schedule(0, 1.0, 0.0, 10)
    assert out.weights == {"lambda_x": 2.0}
    assert out.inner.t_range == (0.02, 0.98)


def test_unknown_key_has_dotted_path_and_suggestion():
    with pytest.raises(ConfigError) as exc:
        parse(Outer, {"inner": {"cfgg": 3.0}}, path="stages.carve")
    msg = str(exc.value)
    assert "unknown key 'stages.carve.inner.cfgg'" in msg
    assert "did you mean 'cfg'" in msg


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"steps": "many"}, "steps: expected int, got str 'many'"),
        ({"steps": True}, "steps: expected int, got bool True"),
        ({"inner": {"cfg": "high"}}, "inner.cfg: expected float, got str 'high'"),
        ({"mode": "c"}, "mode: expected one of 'a', 'b', got str 'c'"),
        ({"inner": {"t_range": [0.1]}}, "inner.t_range: expected list [float, float] (2 items)"),
        ({"names": "abc"}, "names: expected list of string, got str 'abc'"),
        ({"lr": [0, 1, 2]}, "lr: expected float or schedule [start_step, start_value, end_value, end_step]"),
        ({"lr": [10, 1.0, 0.0, 5]}, "lr: schedule end_step (5) is before start_step (10)"),
    ],
)
def test_wrong_type_names_path_expected_and_got(node, expected):
    with pytest.raises(ConfigError) as exc:
        parse(Outer, node)
    assert expected in str(exc.value)


def test_schedule_values():
    s = Schedule(100, 0.98, 0.7, 200)
    assert value_at(s, 0) == pytest.approx(0.98)
    assert value_at(s, 150) == pytest.approx(0.84)
    assert value_at(s, 10_000) == pytest.approx(0.7)
    assert value_at(3.5, 42) == 3.5
    assert Schedule(5, 1.0, 2.0, 5).at(6) == 2.0


def test_describe_prints_types_defaults_and_docs():
    text = describe(Inner)
    assert "cfg: float = 7.5  # Classifier-free guidance scale." in text
    assert "t_range: list [float, float] = [0.02, 0.98]" in text


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def config_dir(tmp_path, monkeypatch, toy_plugin):
    frag = tmp_path / "frags"
    _write(frag / "base.yaml", "seed: 1\nprompt: from base\nextra: {x: 1, who: base}\n")
    _write(frag / "more.yaml", "seed: 2\nextra: {who: more}\n")
    monkeypatch.setenv("HEADGEN_CONFIG_PATH", str(frag))
    recipe = _write(
        tmp_path / "recipe.yaml",
        """
extends: [base.yaml, more.yaml]
name: toy
head: null
extra: {lr: 0.05}
stages:
  fit:
    kind: optimize
    steps: 3
    representation: {type: toy-image}
    renderer: {type: toy-roll}
    cameras: {type: toy-shift}
    guidance: {type: toy-target}
    losses: {lambda_fit: 1.0}
    optimizer: {lr: "${extra.lr}"}
""",
    )
    return recipe


def test_extends_merges_in_order_recipe_last(config_dir):
    plain = compose(config_dir, [])
    assert plain["seed"] == 2  # more.yaml after base.yaml
    assert plain["extra"] == {"x": 1, "who": "more", "lr": 0.05}
    assert plain["prompt"] == "from base"
    cfg = validate(plain)
    assert cfg.stages["fit"].config.optimizer.lr == 0.05  # interpolation resolved


def test_overrides_apply_and_are_typed(config_dir):
    cfg = validate(compose(config_dir, ["stages.fit.steps=50", 'prompt="an old sailor, grey beard"', "seed=7"]))
    assert cfg.stages["fit"].config.steps == 50
    assert cfg.prompt == "an old sailor, grey beard"
    assert cfg.seed == 7
    with pytest.raises(ConfigError, match=r"stages\.fit\.steps: expected int, got str 'lots'"):
        validate(compose(config_dir, ["stages.fit.steps=lots"]))


def test_override_schedule_for_any_scalar(config_dir):
    cfg = validate(compose(config_dir, ["stages.fit.losses.lambda_fit=[0,1.0,0.0,10]"]))
    assert cfg.stages["fit"].config.losses["lambda_fit"] == Schedule(0, 1.0, 0.0, 10)


def test_unknown_stage_in_override(config_dir):
    with pytest.raises(ConfigError) as exc:
        compose(config_dir, ["stages.fitt.steps=5"])
    assert "unknown stage 'fitt'" in str(exc.value) and "did you mean 'fit'" in str(exc.value)


def test_type_shorthand_override_replaces_node(config_dir):
    plain = compose(config_dir, ["stages.fit.guidance=toy-target", "stages.fit.guidance.noise=0.5"])
    assert plain["stages"]["fit"]["guidance"] == {"type": "toy-target", "noise": 0.5}


def test_unknown_key_in_registered_part(config_dir):
    with pytest.raises(ConfigError) as exc:
        validate(compose(config_dir, ["stages.fit.guidance.nois=0.1"]))
    assert "unknown key 'stages.fit.guidance.nois' (did you mean 'noise'?)" in str(exc.value)


def test_unknown_registered_name_lists_known(config_dir):
    with pytest.raises(ConfigError) as exc:
        validate(compose(config_dir, ["stages.fit.guidance.type=toy-targt"]))
    msg = str(exc.value)
    assert "stages.fit.guidance.type: unknown guidance 'toy-targt' (did you mean 'toy-target'?)" in msg
    assert "known guidance names:" in msg and "toy-target" in msg


def test_missing_recipe_file():
    with pytest.raises(ConfigError, match="recipe file not found: methods/nope.yaml"):
        compose("methods/nope.yaml", [])


def test_missing_fragment_and_cycle(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADGEN_CONFIG_PATH", str(tmp_path))
    bad = _write(tmp_path / "r.yaml", "extends: [nothere.yaml]\nname: x\n")
    with pytest.raises(ConfigError, match="fragment 'nothere.yaml' not found"):
        compose(bad, [])
    _write(tmp_path / "a.yaml", "extends: [b.yaml]\n")
    _write(tmp_path / "b.yaml", "extends: [a.yaml]\n")
    with pytest.raises(ConfigError, match="cycle"):
        compose(_write(tmp_path / "c.yaml", "extends: [a.yaml]\n"), [])


def test_bad_yaml_and_bad_override_syntax(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "name: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse YAML"):
        compose(bad, [])
    good = _write(tmp_path / "good.yaml", "name: x\n")
    with pytest.raises(ConfigError, match="not of the form key=value"):
        compose(good, ["steps"])


def test_empty_prompt_rejected(config_dir):
    with pytest.raises(ConfigError, match="prompt is empty"):
        validate(compose(config_dir, ['prompt="  "']))


def test_resolved_config_round_trips(config_dir):
    cfg = validate(compose(config_dir, []))
    again = validate(to_plain(cfg))
    assert to_plain(again) == to_plain(cfg)
    assert to_plain(cfg)["stages"]["fit"]["kind"] == "optimize"


def test_model_refs_are_checked_and_unused_ones_skipped():
    from headgen.config.typed import model_refs

    plain = {
        "name": "x", "prompt": "p", "head": None,
        "models": {"sd15": {"hub_id": "a/b"}, "cn": {"hub_id": "c/d", "kind": "controlnet"}},
        "stages": {"s": {"kind": "optimize", "renderer": {"type": "mesh"}, "cameras": {"type": "arc"},
                         "representation": {"type": "parametric-mesh"},
                         "guidance": {"type": "ssd", "model": "sd15", "controlnet": "cn", "use_controlnet": False},
                         "losses": {"lambda_ssd": 1.0}}},
    }
    cfg = validate(plain)
    assert [name for _, name in model_refs(cfg.stages)] == ["sd15"]
    plain["stages"]["s"]["guidance"]["model"] = "sd16"
    with pytest.raises(ConfigError, match=r"stages.s.guidance.model: unknown model 'sd16' \(did you mean 'sd15'\?\)"):
        validate(plain)


@pytest.mark.parametrize("override, message", [
    ("stages.fit.guidance.noise=.nan", "stages.fit.guidance.noise: must be a finite number, got nan"),
    ("stages.fit.guidance.noise=.inf", "stages.fit.guidance.noise: must be a finite number, got inf"),
    ("stages.fit.optimizer.lr=.nan", "stages.fit.optimizer.lr: must be a finite number, got nan"),
    ("stages.fit.losses.lambda_fit=[0,1.0,.inf,10]", "stages.fit.losses.lambda_fit: a schedule's values must be"),
    ("stages.fit.optimizer.lr=-1", "stages.fit.optimizer: lr: a learning rate must be >= 0 (0 freezes the group)"),
    ("stages.fit.optimizer.groups={all: [0, 0.1, -0.1, 10]}", "optimizer: groups.all: a learning rate must be >= 0"),
])
def test_non_finite_numbers_and_negative_learning_rates_are_rejected(config_dir, override, message):
    with pytest.raises(ConfigError) as exc:
        validate(compose(config_dir, [override]))
    assert message in str(exc.value)


@pytest.mark.parametrize("given, expected", [
    ("an old man #1 with a beard", "an old man #1 with a beard"),  # not a YAML comment
    ("${oc.env:HOME}", "${oc.env:HOME}"),  # not an interpolation
    ('"an old sailor, grey beard"', "an old sailor, grey beard"),  # one pair of quotes removed
    ("yes", "yes"), ("1e3", "1e3"), ("a=b: c", "a=b: c"),  # no YAML typing
    ("a \\${x}", "a \\${x}"),
])
def test_prompts_on_the_command_line_are_taken_literally(config_dir, given, expected):
    plain = compose(config_dir, [f"prompt={given}", f"negative_prompt={given}", f"edit_prompt={given}"])
    assert plain["prompt"] == plain["negative_prompt"] == plain["edit_prompt"] == expected
