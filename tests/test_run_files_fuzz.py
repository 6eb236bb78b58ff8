"""A finished run's state files, damaged at random, then ``--export``: never a traceback, never other
assets without a word.

200 mutations (truncation, byte flips, deletion, swapping a file between the two stages) of
``config.yaml``, ``state.json``, ``summary.json``, ``stages/*/result.*`` and ``stages/*/last.ckpt`` of a tiny run of
tests/plugins/toy_mesh.yaml (OBJ exporter). Every outcome must be exit 0 with assets identical to the
undamaged run's, or exit 2 with one line of message. The one exception is a config.yaml that still
reads as a valid config with different settings: that is a hand edit, which ``--export`` honours (the
README says so), so its assets may differ.
"""

from __future__ import annotations

import copy
import io
import random
import shutil
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from testpaths import PLUGINS

from headgen.cli import main
from headgen.config.recipe import validate
from headgen.config.typed import to_plain
from headgen.errors import HeadgenError
from headgen.rundir import RunDir

MUTATIONS = 200
TARGETS = ["config.yaml", "state.json", "summary.json"] + [
    f"stages/{stage}/{name}"
    for stage in ("fit", "polish")
    for name in ("result.safetensors", "result.json", "last.ckpt")
]


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["--plugin", "toy_parts", *args])
    return code, out.getvalue(), err.getvalue()


def assets_of(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "assets").iterdir())}


def config_of(run: Path) -> dict | None:
    """The run's config as --export reads it, or None when it does not read as a valid config."""
    try:
        return to_plain(validate(copy.deepcopy(RunDir(run).read_config())))
    except (HeadgenError, ValueError, TypeError):
        return None


def mutate(run: Path, rng: random.Random) -> str:
    """Damage one file of ``run``; a description of what was done."""
    rel = rng.choice(TARGETS)
    path = run / rel
    how = rng.choice(["truncate", "flip", "flip", "delete", "swap"])
    if how == "swap" and rel.startswith("stages/"):
        other = run / rel.replace("/fit/", "/@/").replace("/polish/", "/fit/").replace("/@/", "/polish/")
        a, b = path.read_bytes(), other.read_bytes()
        path.write_bytes(b)
        other.write_bytes(a)
        return f"swap {rel} with {other.relative_to(run)}"
    if how == "delete":
        path.unlink()
        return f"delete {rel}"
    data = bytearray(path.read_bytes())
    if how == "truncate":
        size = rng.randrange(len(data))
        path.write_bytes(bytes(data[:size]))
        return f"truncate {rel} to {size} of {len(data)} bytes"
    pos = rng.randrange(len(data))
    data[pos] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return f"flip a bit of byte {pos} of {rel}"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, dict[str, bytes], dict]:
    out = tmp_path_factory.mktemp("fuzz-source")
    code, stdout, err = cli("--config", str(PLUGINS / "toy_mesh.yaml"), "--output-dir", str(out))
    assert code == 0, err
    run = Path(stdout.strip().splitlines()[-1].removeprefix("Run directory: "))
    code, _, err = cli("--export", str(run))  # the reference: an export of the undamaged run
    assert code == 0, err
    assert sorted(assets_of(run)) == ["diffuse.png", "head.mtl", "head.obj"]
    return run, assets_of(run), config_of(run)


def test_damaged_run_files_give_the_same_assets_or_one_message(finished_run, tmp_path):
    source, reference, config = finished_run
    rng = random.Random(20261203)
    outcomes: Counter[str] = Counter()
    mutated: Counter[str] = Counter()
    problems: list[str] = []
    for i in range(MUTATIONS):
        run = tmp_path / f"m{i:03d}"
        shutil.copytree(source, run)
        what = mutate(run, rng)
        mutated[what.split()[0]] += 1
        try:
            code, _, err = cli("--export", str(run))
        except Exception as exc:  # noqa: BLE001 - any escape is the failure this test looks for
            problems.append(f"{what}: traceback {type(exc).__name__}: {exc}")
            continue
        if code == 0 and assets_of(run) == reference:
            outcomes["same assets"] += 1
        elif code == 0 and "config.yaml" in what and config_of(run) not in (None, config):
            outcomes["hand-edited config.yaml"] += 1
        elif code == 0:
            problems.append(f"{what}: exit 0 with different assets")
        elif code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "):
            outcomes["one message"] += 1
        else:
            problems.append(f"{what}: exit {code}, stderr {err[-500:]!r}")
        shutil.rmtree(run)
    print(f"{MUTATIONS} mutations {dict(mutated)}: {dict(outcomes)}")
    assert not problems, f"{len(problems)} of {MUTATIONS}:\n" + "\n".join(problems[:20])
    assert outcomes["one message"] >= MUTATIONS // 4 and outcomes["same assets"] >= MUTATIONS // 10, outcomes
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a run wrote outside its directory"
