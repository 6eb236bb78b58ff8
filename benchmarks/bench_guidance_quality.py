"""Demo-prior texture fit: multi-view PSNR reached by each guidance and CFG (CPU, one run).

    python benchmarks/bench_guidance_quality.py [--steps 100]

The geometry is fixed to the target's; only the albedo is learned (headgen.prior.demo.experiments).
"""

from __future__ import annotations

import argparse
import time

import torch

from headgen.config import build
from headgen.prior.demo.experiments import TextureFit, fit_texture
from headgen.prior.demo.world import DemoWorld

CASES = [
    ("sds", {"cfg": 1.0}, False),
    ("sds", {"cfg": 7.5}, False),
    ("sds", {"cfg": 100.0}, False),
    ("controlnet-sds", {"cfg": 7.5, "controlnet": "cn"}, True),
    ("ssd", {"cfg": 7.5, "controlnet": "cn"}, True),
    ("ssd", {"cfg": 100.0, "controlnet": "cn"}, True),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--prompt", default="an old man with a grey beard")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    world = DemoWorld(build("head", {"type": "builtin"}).load(), args.prompt)
    print(f"demo prior, prompt {args.prompt!r}, {args.steps} steps, 128 px, batch 2, Adam lr 0.005")
    print(f"{'guidance':16s} {'cfg':>6s} {'start dB':>9s} {'end dB':>8s} {'s/step':>7s}")
    for name, cfg, landmarks in CASES:
        t0 = time.perf_counter()
        start, end = fit_texture(world, TextureFit(name, cfg, steps=args.steps, landmarks=landmarks))
        dt = (time.perf_counter() - t0) / args.steps
        print(f"{name:16s} {cfg['cfg']:6.1f} {start:9.2f} {end:8.2f} {dt:7.3f}", flush=True)


if __name__ == "__main__":
    main()
