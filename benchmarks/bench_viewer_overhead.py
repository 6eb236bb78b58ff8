"""What ``--viewer`` costs a run nobody is watching: optimise-stage time with and without the live
viewer (no browser connected), interleaved runs of the same recipe, ratio of medians.

    python benchmarks/bench_viewer_overhead.py [--recipe tests/recipes/viewer_tiny.yaml] [--steps 40]
                                               [--repeats 3] [--every 1]

Prints each run's stage time and the ratio (target: <= 1.05). ``--every 1`` is the worst case: the
loop asks the viewer after every step. Runs under the demo prior, with ``demo.views=exact``.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def stage_seconds(recipe: str, steps: int, out: Path, viewer: object | None) -> float:
    from headgen import pipeline

    buf = io.StringIO()
    with redirect_stdout(buf), redirect_stderr(buf):
        root = pipeline.start_run(recipe, ["prior=demo", "demo.views=exact", f"stages.texture.steps={steps}",
                                           f"output_dir={out}"], live_viewer=viewer)
    summary = json.loads((root / "summary.json").read_text())
    return sum(s["seconds"] for s in summary["stages"] if s["kind"] == "optimize")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="tests/recipes/viewer_tiny.yaml")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--every", type=int, default=1)
    args = p.parse_args(argv)
    from headgen.viewer.live import LiveViewer
    from headgen.viewer.serve import free_port_after

    viewer = LiveViewer("127.0.0.1", free_port_after("127.0.0.1", 8200) or 8200, every=args.every, log=lambda _: None)
    times: dict[str, list[float]] = {"off": [], "on": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            stage_seconds(args.recipe, 2, Path(tmp), None)  # warm caches and imports
            for i in range(args.repeats):
                for mode in ("off", "on"):
                    live = viewer if mode == "on" else None
                    t = stage_seconds(args.recipe, args.steps, Path(tmp) / f"{mode}{i}", live)
                    times[mode].append(t)
                    print(f"  run {i + 1} viewer {mode:3s}: optimise stages {t:7.2f} s")
    finally:
        viewer.close()
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    print(f"{args.recipe}, {args.steps} steps, viewer every {args.every} step(s), no browser: median {off:.2f} s "
          f"without, {on:.2f} s with the live viewer; ratio {on / off:.3f} (target <= 1.05); "
          f"updates sent: {viewer.sent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
