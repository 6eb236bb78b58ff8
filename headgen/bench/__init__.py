"""Benchmark harness: a grid of methods x prompts x seeds, each a normal run, scored and reported.

``python -m headgen.bench configs/bench/smoke.yaml [--launcher ray --workers 2]``; see
:mod:`headgen.bench.runner` for the folder layout and the resume rule.
"""

from headgen.bench.config import BenchConfig, MethodEntry, load_bench_config, read_prompts
from headgen.bench.runner import run_bench

__all__ = ["BenchConfig", "MethodEntry", "load_bench_config", "read_prompts", "run_bench"]
