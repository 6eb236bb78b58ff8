"""The command line: ``python launch.py --config methods/X.yaml [key=value ...]``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from headgen.errors import HeadgenError

EPILOG = """\
examples:
  python launch.py --config methods/dreamface.yaml prompt="the face of an old sailor"
  python launch.py --config methods/dreamface.yaml stages.carve.steps=50 --device cuda
  python launch.py --resume outputs/dreamface/the-face-of-an-old-sailor@20261120-101500
  python launch.py --resume RUN_DIR stages.carve.optimizer.lr=1e-4   (unfinished stages only)
  python launch.py --export outputs/dreamface/the-face-of-an-old-sailor@20261120-101500
  python launch.py --animate RUN_DIR --performance take.csv   (a Live Link Face take -> GLB clip + video)
  python launch.py --bench configs/bench/smoke.yaml [--launcher ray --workers 2]
  python launch.py --config methods/headartist.yaml --dry-run   (full size, random weights, 1 step per stage)
  python launch.py --list
  python launch.py --models [methods/dreamface.yaml]   (which weights are on disk, how to get the rest)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="launch.py",
        description="headgen: generate a 3D head from a text prompt with a method recipe.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe overrides (OmegaConf dotlist); with --resume, of unfinished stages only")
    p.add_argument("--config", metavar="RECIPE", help="recipe YAML, e.g. methods/dreamface.yaml")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: the recipe's, auto)")
    p.add_argument("--seed", type=int, help="seed of every random generator (default: the recipe's)")
    p.add_argument("--output-dir", metavar="DIR", help="root of run directories (default: outputs)")
    p.add_argument("--dry-run", action="store_true",
                   help="with --config: run every stage once at full size on random-weight models (built once "
                        "under $HEADGEN_CACHE_DIR/full-size-random) to check shapes, dtypes, time and memory")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run where it stopped")
    p.add_argument("--export", metavar="RUN_DIR", help="re-run the export stage(s) of a finished run")
    p.add_argument("--animate", metavar="RUN_DIR",
                   help="drive a finished run's head with --performance: writes assets/performance-<take>/ "
                        "(head.glb with the take as its animation clip, animation.mp4)")
    p.add_argument("--performance", metavar="CSV", help="with --animate: a Live Link Face take (.csv)")
    p.add_argument("--timecode-fps", type=float, metavar="FPS",
                   help="with --animate: the take's timecode rate, for takes under a second")
    p.add_argument("--view", metavar="RUN_DIR",
                   help="open a run directory (or a bench folder) in the 3D web viewer; Ctrl+C closes it")
    p.add_argument("--viewer", action="store_true",
                   help="with --config or --resume: watch the run live in the 3D web viewer")
    p.add_argument("--viewer-every", type=int, default=10, metavar="N",
                   help="with --viewer: show the current render and surface every N steps (default 10)")
    p.add_argument("--host", default="127.0.0.1", help="viewer address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="viewer port (default 8080)")
    p.add_argument("--list", action="store_true", help="list registered parts and recipes, then exit")
    p.add_argument("--describe", metavar="KIND/NAME", help="print the options of one part, e.g. guidance/sds")
    p.add_argument("--models", nargs="?", const="", metavar="RECIPE",
                   help="list the pretrained models of RECIPE (default: every recipe in methods/), whether they are "
                        "on disk, their size and how to get them; key=value overrides apply (e.g. a local_dir)")
    p.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE", help="import a plugin module (repeatable)"
    )
    p.add_argument("--verbose", action="store_true", help="show tracebacks and library logs")
    p.add_argument("--bench", metavar="BENCH_YAML", help="run a benchmark grid, e.g. configs/bench/smoke.yaml")
    from headgen.bench.__main__ import add_options

    add_options(p)  # --launcher --workers --ray-address --fresh (with --bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    try:
        return _run(args)
    except HeadgenError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from headgen.registry import plugin_origin

        origin = plugin_origin(exc)
        if origin is None:  # headgen's own code: a bug, reported with its traceback
            raise
        if args.verbose:
            traceback.print_exc()
        stage = getattr(exc, "headgen_stage", None)
        print(f"error: a plugin part failed{f' in stage {stage!r}' if stage else ''}: {type(exc).__name__}: "
              f"{' '.join(str(exc).split())} ({origin}); --verbose shows the traceback", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: continue later with --resume RUN_DIR (the last checkpoint is kept)", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from headgen.registry import load_plugins

    load_plugins(args.plugin)
    if args.list:
        print(list_text())
        return 0
    if args.describe:
        print(describe_text(args.describe))
        return 0
    if args.models is not None:
        from headgen.models.inventory import models_text

        recipe, overrides = args.models, list(args.overrides)
        if "=" in recipe and not Path(recipe).exists():  # `--models key=value`: an override, not a recipe
            recipe, overrides = "", [recipe, *overrides]
        print(models_text(recipe or None, overrides))
        return 0
    modes = [m for m in ("config", "resume", "export", "animate", "bench", "view") if getattr(args, m)]
    if len(modes) != 1:
        raise HeadgenError(
            "give exactly one of --config RECIPE, --resume RUN_DIR, --export RUN_DIR, --animate RUN_DIR, "
            "--bench BENCH_YAML, --view RUN_DIR (or --list)"
        )
    if args.viewer and not (args.config or args.resume):
        raise HeadgenError("--viewer goes with --config RECIPE or --resume RUN_DIR (to look at a finished run: "
                           "--view RUN_DIR)")
    if args.view:
        return _view(args)
    if (args.performance or args.timecode_fps) and not args.animate:
        raise HeadgenError("--performance and --timecode-fps go with --animate RUN_DIR")
    if args.animate:
        if not args.performance:
            raise HeadgenError("--animate RUN_DIR needs --performance TAKE.csv (a Live Link Face recording)")
        if args.overrides or args.seed is not None or args.output_dir:
            raise HeadgenError("--animate takes no overrides, --seed or --output-dir: it writes into the run's "
                               "assets/performance-<take>/ with the recipe's export settings")
        from headgen import pipeline

        folder = pipeline.animate_run(args.animate, args.performance, timecode_fps=args.timecode_fps,
                                      device=args.device, verbose=args.verbose)
        print(f"Animation: {folder}")
        return 0
    if args.dry_run and not args.config:
        raise HeadgenError("--dry-run goes with --config RECIPE (it starts a new run)")
    if args.bench:
        from headgen.bench.__main__ import bench_main

        return bench_main(args.bench, args, args.output_dir, args.device)
    from headgen import pipeline

    if args.config:
        overrides = list(args.overrides)
        for flag, key in (("seed", "seed"), ("device", "device"), ("output_dir", "output_dir")):
            value = getattr(args, flag)
            if value is not None:
                overrides.append(f"{key}={value}")
        if args.dry_run:
            from headgen.dryrun import dry_run_overrides

            overrides = dry_run_overrides(args.config, overrides)
        with _live_viewer(args) as live:
            root = pipeline.start_run(args.config, overrides, verbose=args.verbose, live_viewer=live)
            _show_result(live, root)
        if args.dry_run:
            from headgen.dryrun import report

            print(report(root))
    else:
        if args.seed is not None or args.output_dir or (args.export and args.overrides):
            raise HeadgenError(
                "--seed, --output-dir and (with --export) overrides cannot be combined with --resume/--export: the "
                "run continues with its saved config.yaml; --resume takes overrides of its unfinished stages "
                "(e.g. stages.NAME.optimizer.lr=1e-4) and --device"
            )
        if args.resume:
            with _live_viewer(args) as live:
                root = pipeline.resume_run(args.resume, list(args.overrides), device=args.device,
                                           verbose=args.verbose, live_viewer=live)
                _show_result(live, root)
        else:
            root = pipeline.export_run(args.export, device=args.device, verbose=args.verbose)
    print(f"Run directory: {root}")
    return 0


@contextlib.contextmanager
def _live_viewer(args: argparse.Namespace) -> Iterator[Any]:
    """The live viewer of ``--viewer`` (None without it), closed when the run ends or fails."""
    if not args.viewer:
        yield None
        return
    from headgen.viewer.live import LiveViewer

    live = LiveViewer(args.host, args.port, every=args.viewer_every)
    try:
        yield live
    finally:
        print(f"Live viewer closed after {live.sent} updates", file=sys.stderr)
        live.close()


def _show_result(live: Any, root: Path, wait: Any = None) -> bool:
    """After a watched run, in a terminal: the live viewer shows the finished head until Ctrl+C
    (``wait(viewer)``); in scripts and CI (no terminal on stdin) the viewer closes with the run. Whether it
    showed the result."""
    if live is None or not sys.stdin.isatty():
        return False
    from headgen.viewer.app import RunViewer
    from headgen.viewer.run_data import read_run

    viewer = RunViewer(live.server, [read_run(root)])
    print(f"Run finished ({root}): {live.url} now shows its result; Ctrl+C closes the viewer")
    try:
        (wait or _until_ctrl_c)(viewer)
    finally:
        viewer.close()
    return True


def _until_ctrl_c(viewer: Any) -> None:
    import time

    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass


def _view(args: argparse.Namespace) -> int:
    """``--view RUN_DIR``: serve the viewer until Ctrl+C."""
    import time

    from headgen.viewer.app import open_viewer
    from headgen.viewer.serve import url

    if args.overrides or args.seed is not None or args.output_dir:
        raise HeadgenError("--view takes no overrides, --seed or --output-dir: it only reads the run directory")
    server, viewer = open_viewer(args.view, args.host, args.port)
    print(f"Viewer: {url(server)}  ({len(viewer.runs)} run{'s' * (len(viewer.runs) > 1)}; Ctrl+C closes it)")
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("viewer closed")
        return 0
    finally:
        viewer.close()
        server.stop()


def list_text() -> str:
    from headgen.config.compose import repo_root
    from headgen.registry import registered, summary_line

    lines = []
    for kind, table in registered().items():
        folders = sorted({_folder(cls) for cls in table.values()})
        lines.append(f"{kind}:  ({', '.join(folders)})")
        width = max(len(n) for n in table)
        for name, cls in table.items():
            lines.append(f"  {name:<{width}}  {summary_line(cls)}")
    recipes = sorted((repo_root() / "methods").glob("*.yaml"))
    if recipes:
        lines.append("recipes (--config):")
        for r in recipes:
            lines.append(f"  {os.path.relpath(r, Path.cwd()) if r.is_relative_to(Path.cwd()) else r}")
    lines.append("details of one part: python launch.py --describe KIND/NAME")
    return "\n".join(lines)


def describe_text(spec: str) -> str:
    from headgen.config.typed import config_class, describe
    from headgen.registry import lookup, summary_line

    kind, sep, name = spec.partition("/")
    if not sep:
        raise HeadgenError(f"--describe {spec}: use KIND/NAME, e.g. guidance/sds (see --list)")
    cls = lookup(kind, name)
    body = describe(config_class(cls)) or "  (no options)"
    return f"{kind} {name}: {summary_line(cls)}\ndefined in: {cls.__module__}\noptions:\n{body}"


def _folder(cls: type) -> str:
    """The folder of a registered class's module, e.g. ``guidance/`` or ``headgen/render/``."""
    return "/".join(cls.__module__.split(".")[:-1]) + "/"
