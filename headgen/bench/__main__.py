"""``python -m headgen.bench BENCH.yaml [--launcher local|ray] [--workers N] [--fresh]``.

Exit codes: 0 every run finished; 1 the bench finished but some runs failed (its tables say which);
2 the bench could not run (a bad config).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

from headgen.errors import HeadgenError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m headgen.bench",
        description="Run a bench: methods x prompts x seeds, each a normal run; writes "
                    "<output_dir>/bench/<name>@<time>/ (results.csv/json/md, plots, gallery.html).",
    )
    p.add_argument("config", metavar="BENCH_YAML", help="bench config, e.g. configs/bench/smoke.yaml")
    add_options(p)
    return p


def add_options(p: argparse.ArgumentParser) -> None:
    """The bench's options (shared with launch.py --bench)."""
    p.add_argument("--launcher", choices=["local", "ray"], help="local (sequential, default) or ray")
    p.add_argument("--workers", type=int, help="ray: concurrent runs of a local Ray instance (CPUs)")
    p.add_argument("--ray-address", metavar="ADDR", help="ray: an existing cluster (auto, ray://host:10001)")
    p.add_argument("--fresh", action="store_true",
                   help="start a new bench folder instead of resuming the latest one of this name")


def bench_main(config: str, args: argparse.Namespace, output_dir: str | None = None,
               device: str | None = None) -> int:
    from headgen.bench import load_bench_config, run_bench
    from headgen.bench.one_run import OK
    from headgen.bench.runner import RESULTS_JSON

    cfg = load_bench_config(config, launcher=args.launcher, workers=args.workers,
                            ray_address=args.ray_address, output_dir=output_dir, device=device)
    folder = run_bench(cfg, fresh=args.fresh, verbose=getattr(args, "verbose", False))
    print(f"Bench directory: {folder}")
    rows = json.loads((folder / RESULTS_JSON).read_text(encoding="utf-8"))["rows"]
    failed = [r for r in rows if r["status"] != OK]
    if failed:  # the tables are written, but a script or CI must see that the bench is incomplete
        first = failed[0]
        print(f"error: {len(failed)} of {len(rows)} runs failed (first: {first['method']} | {first['prompt']} | "
              f"seed {first['seed']}: {first['error'].splitlines()[0][:200] if first['error'] else 'no error text'}); "
              f"see results.md and each run's run.log", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    p.add_argument("--output-dir", metavar="DIR", help="root of the bench folder (default: the config's)")
    p.add_argument("--device", help="device of every run (default: the config's)")
    p.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    args = p.parse_args(argv)
    try:
        return bench_main(args.config, args, args.output_dir, args.device)
    except HeadgenError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
