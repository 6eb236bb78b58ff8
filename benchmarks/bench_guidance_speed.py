"""Guidance step time, and step time / (time of the model passes the step contains).

    python benchmarks/bench_guidance_speed.py --size tiny            # tiny random SD (seconds)
    python benchmarks/bench_guidance_speed.py --size full --device cuda --dtype float16
    python benchmarks/bench_guidance_speed.py --size demo            # the demo prior: exact vs ambiguous views

`full` builds SD 1.5-sized UNet / VAE / text encoder / ControlNets with random weights (no
download), so timings are real. Each step: VAE-encode the 512 px render (rgb guidance), one
batched UNet call, ControlNet call(s), backward of the SDS loss into the render. The ratio says
how much time the guidance adds around its model passes (1.0 = none).

`demo` times each guidance on the demo prior, with the data rendered at the batch's cameras
(``demo.views: exact``) and over the azimuths each text allows (``ambiguous``: cells cached across
steps), at random cameras each step like an optimise stage: the first step (cold cache), the mean of
the later steps, the mean of the last quarter (a warm cache), and the cell cache's size and cells
touched.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from guidance.base import GuidanceInput
from headgen.cameras import Cameras
from headgen.config import parse
from headgen.config.recipe import ModelSpec
from headgen.models.random_init import save_random_sd
from headgen.prior.backbone import Branch, Control
from headgen.prior.load import load_pretrained
from headgen.prior.prompts import PromptConfig
from headgen.registry import lookup


def timed(fn, device: torch.device, repeat: int) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["tiny", "full", "demo"], default="tiny")
    p.add_argument("--steps", type=int, default=80, help="demo: steps per guidance (random cameras)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", nargs="*", default=None, metavar="GUIDANCE",
                   help="time only these guidance (e.g. --only iesd); full-size CPU runs take minutes each")
    args = p.parse_args()
    if args.size == "demo":
        return demo_main(args)
    device = torch.device(args.device)
    res = 512 if args.size == "full" else 64
    with tempfile.TemporaryDirectory() as tmp:
        sd = save_random_sd(Path(tmp) / "sd", size=args.size)
        cn = sd.with_name("sd-controlnet")
        models = {
            "sd": ModelSpec(hub_id="random/sd", local_dir=str(sd), dtype=args.dtype),
            "cn": ModelSpec(hub_id="random/cn", local_dir=str(cn), kind="controlnet", dtype=args.dtype),
            "ip2p": ModelSpec(hub_id="random/ip2p", local_dir=str(cn), kind="controlnet", dtype=args.dtype),
        }
        bb = load_pretrained(models, "sd", {"landmarks": "cn", "ip2p": "ip2p"}, PromptConfig(cache_dir=None), device)
        b = args.batch
        cams = Cameras.from_spherical(torch.zeros(b), torch.zeros(b), torch.full((b,), 3.0), torch.full((b,), 40.0),
                                      res).to(device)
        render = torch.rand(b, res, res, 3, device=device)
        lmk = torch.rand(b, res, res, 3, device=device)
        z = bb.encode(render)
        t = torch.full((b,), 500, device=device)
        ctrl = Control("landmarks", lmk, 1.0)
        edit = Control("ip2p", render, 1.0)
        four = [Branch(["a"] * b, [ctrl]), Branch([""] * b, [ctrl]), Branch(["e"] * b, [ctrl, edit]),
                Branch([""] * b, [ctrl, edit])]
        # DreamFace's texture path: the UV latent (64x64 at full size) through a second 2-branch UNet call.
        tex = torch.randn(1, 4, res // 8, res // 8, device=device)
        pass_fns = {
            "vae": lambda: bb.encode(render),
            "unet2": lambda: bb.eps(z, t, [Branch(["a"] * b), Branch([""] * b)]),
            "unet2+cn": lambda: bb.eps(z, t, [Branch(["a"] * b, [ctrl]), Branch([""] * b, [ctrl])]),
            "unet4+cn+ip2p": lambda: bb.eps(z, t, four),
            "unet2-texture": lambda: bb.eps(tex, t[:1], [Branch(["a"]), Branch([""])]),
        }
        cases = [
            ("sds", {"model": "sd"}, ["vae", "unet2"]),
            ("controlnet-sds", {"model": "sd", "controlnet": "cn"}, ["vae", "unet2+cn"]),
            ("dual-path-sds", {"model": "sd", "texture_model": "sd", "mask_channel": False},
             ["vae", "unet2", "unet2-texture"]),
            ("ssd", {"model": "sd", "controlnet": "cn"}, ["vae", "unet2+cn"]),
            ("iesd", {"model": "sd", "controlnet": "cn", "ip2p_controlnet": "ip2p", "edit_prompt": "make it old"},
             ["vae", "unet4+cn+ip2p"]),
        ]
        cases = [c for c in cases if not args.only or c[0] in args.only]
        # Only the passes the selected guidance contain are timed (each is minutes on a CPU at full size).
        needed = list(dict.fromkeys(p for _, _, ps in cases for p in ps))
        pass_time = {k: timed(pass_fns[k], device, args.repeat) for k in needed}
        print(f"{args.size} SD architecture, random weights, {device}, {args.dtype}, batch {b}, render {res}px")
        print("model passes: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in pass_time.items()))
        print(f"{'guidance':16s} {'step ms':>9s} {'passes ms':>10s} {'ratio':>6s}")
        gen = torch.Generator().manual_seed(0)
        for name, cfg, pass_names in cases:
            passes = sum(pass_time[k] for k in pass_names)
            cls = lookup("guidance", name)
            extra_bb = {"texture_backbone": bb} if name == "dual-path-sds" else {}
            g = cls(parse(cls.Config, {"resolution": res, **cfg}), None, backbone=bb, **extra_bb)
            x = render.clone().requires_grad_(True)

            def step(g=g, x=x) -> None:
                inp = GuidanceInput({"rgb": x}, cams, ["front"] * b, "a face", 0,
                                    inputs={"landmark_map": lmk, "source_render": render.detach()},
                                    extra={"texture_latent": tex.clone().requires_grad_(True)})
                out = g(inp, gen)
                sum(v for k, v in out.items() if k.startswith("loss_")).backward()

            dt = timed(step, device, args.repeat)
            print(f"{name:16s} {dt * 1000:9.1f} {passes * 1000:10.1f} {dt / passes:6.2f}", flush=True)


DEMO_CASES = [
    ("sds", {}, "rgb"),
    ("controlnet-sds", {"controlnet": "cn"}, "rgb"),
    ("ssd", {"controlnet": "cn", "prompt": {"view_dependent": True}}, "normal"),
    ("iesd", {"controlnet": "cn", "ip2p_controlnet": "ip2p", "edit_prompt": "with dark skin"}, "rgb"),
]


def demo_main(args: argparse.Namespace) -> None:
    from headgen.camera_sampling import view_labels
    from headgen.cameras import Lights
    from headgen.config.demo import DemoSettings
    from headgen.heads.builtin import BuiltinHead
    from headgen.prior.demo.backbone import DemoBackbone
    from headgen.prior.demo.world import DemoWorld
    from headgen.render.landmarks import render_landmark_map

    head = BuiltinHead(parse(BuiltinHead.Config, {})).load()
    res, b = 128, args.batch
    prompt = "an old sailor with a grey beard"
    print(f"demo prior, builtin head, {torch.get_num_threads()} threads, batch {b}, render {res}px, "
          f"{args.steps} steps at random cameras (azimuth -180..180, elevation -10..45, fov 30..50)")
    print(f"{'guidance':16s} {'views':10s} {'first ms':>9s} {'mean ms':>9s} {'last 1/4 ms':>12s} {'cells':>6s} "
          f"{'cache MB':>9s}")
    for name, cfg, key in DEMO_CASES:
        if args.only and name not in args.only:
            continue
        for views in ("exact", "ambiguous"):
            world = DemoWorld(head, prompt, "with dark skin", settings=DemoSettings(views=views))
            bb = DemoBackbone(world, controlnets=["landmarks", "ip2p"])
            cls = lookup("guidance", name)
            g = cls(parse(cls.Config, {"model": "sd", "resolution": res, "image_key": key, **cfg}), None, backbone=bb)
            gen = torch.Generator().manual_seed(0)
            times = []
            for _ in range(args.steps):
                az = torch.rand(b, generator=gen) * 360 - 180
                el = torch.rand(b, generator=gen) * 55 - 10
                fov = torch.rand(b, generator=gen) * 20 + 30
                cams = Cameras.from_spherical(el, az, torch.full((b,), 3.0), fov, res)
                lights = Lights.headlight(cams)
                render = torch.rand(b, res, res, 3).requires_grad_(True)
                t0 = time.perf_counter()
                lmk = render_landmark_map(head.landmarks_mediapipe(), cams)
                source = world.images(world.target, cams, "rgb", res // 2)[:, 0]
                inp = GuidanceInput({key: render}, cams, view_labels(cams), prompt, 0, lights=lights,
                                    inputs={"landmark_map": lmk, "source_render": source})
                out = g(inp, gen)
                sum(v for k, v in out.items() if k.startswith("loss_")).backward()
                times.append(time.perf_counter() - t0)
            stats = world.cells.stats()
            later = sum(times[1:]) / max(1, len(times) - 1)
            tail = times[-max(1, len(times) // 4):]
            print(f"{name:16s} {views:10s} {times[0] * 1000:9.1f} {later * 1000:9.1f} "
                  f"{sum(tail) / len(tail) * 1000:12.1f} {stats['cells_touched']:6d} {stats['cache_peak_mb']:9.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
