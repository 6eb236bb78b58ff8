"""``launcher: ray``: one Ray task per run, results gathered as they finish.

Without ``ray_address`` a local Ray instance is started with ``num_cpus=workers`` (each task asks
for one CPU, so at most ``workers`` runs at a time). With ``ray_address`` (``auto`` or
``ray://head:10001``) the tasks go to that cluster: each task asks for one GPU when the bench's
device is cuda, else one CPU. The workers must be able to import headgen (install it on every
node, or start the cluster from this checkout) and write to the bench folder (a shared file
system), since every run writes its normal run directory there. Ray is optional:
``pip install 'ray[default]'`` (the ``ray`` extra of setup.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from headgen.bench.config import BenchConfig
from headgen.errors import HeadgenError


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise HeadgenError(
            "launcher ray: Ray is not installed; pip install 'ray[default]' (or pip install -e '.[ray]'), "
            "or use the default local launcher"
        ) from exc
    return ray


def _task(spec: dict[str, Any], verbose: bool) -> dict[str, Any]:
    from headgen.bench.one_run import run_one

    return run_one(spec, verbose=verbose)


def run_with_ray(specs: list[dict[str, Any]], cfg: BenchConfig, record: Callable[[dict[str, Any]], None],
                 *, verbose: bool = False) -> None:
    """Run every spec as a Ray task; ``record`` gets each row as its run finishes."""
    ray = _import_ray()
    from headgen.config.compose import repo_root

    started = not ray.is_initialized()
    if started:
        # Workers import headgen and its plugin packages from this checkout.
        pythonpath = os.pathsep.join(p for p in (str(repo_root()), os.environ.get("PYTHONPATH", "")) if p)
        runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}}
        if cfg.ray_address:
            ray.init(address=cfg.ray_address, runtime_env=runtime_env, log_to_driver=verbose)
        else:
            ray.init(num_cpus=cfg.workers, include_dashboard=False, runtime_env=runtime_env,
                     log_to_driver=verbose, configure_logging=False)
    try:
        gpu = cfg.device.startswith("cuda")
        options = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": 1}
        # A run's failure is recorded by run_one; Ray must not retry it (runs are not idempotent).
        remote = ray.remote(max_retries=0, **options)(_task)
        pending = {remote.remote(spec, verbose): spec for spec in specs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                spec = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a crashed worker is one failed run, not the bench's end
                    row = _crashed_row(spec, exc)
                record(row)
    finally:
        if started:
            ray.shutdown()


def _crashed_row(spec: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    row = {k: spec[k] for k in ("key", "method", "recipe", "prompt", "seed", "prior", "device")}
    row.update(status="failed", error=f"ray task failed: {type(exc).__name__}: {exc}", run_dir="", notes="",
               log="")
    return row


__all__ = ["run_with_ray"]
