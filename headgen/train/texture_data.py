"""The UV texture folder of DreamFace's texture LDM and PBR decoders: check one, or make a demo one.

    python -m headgen.train texture-data --check DATA [--triples]
    python -m headgen.train texture-data --demo OUT [--count 16 --size 512 --head ict-facekit]

Layout of DATA (:mod:`headgen.train.uv_data`)::

    dataset.json          {"head": "ict-facekit", "undesired": ["NAME", ...]}
    textures/NAME.png     diffuse UV texture (RGB, square; every image one size, a multiple of 8)
    masks/NAME.png        non-face mask B (one channel): white = face, black = non-face (hair, caps,
                          holes, the atlas's unused area), as the paper's B (0 = non-face)
    captions/NAME.txt     one caption
    specular/NAME.png     optional specularity map (grey), for the PBR decoders
    normal/NAME.png       optional tangent-space normal map ((n + 1) / 2, OpenGL green-up)

``undesired`` names the textures whose lighting was not removed (the paper's Omega_u: their
captions get the learned token C_u, the others C_d). ``--check`` prints a summary, or one error
listing every problem; ``--triples`` also requires (diffuse, specular, normal) triples.

``--demo`` paints a data set from the demo prior's targets (the same painting the demo prior's
texture data uses): each caption is a target's prompt, its UV albedo the texture, its mask the
head's UV coverage minus the painted hair. Every third texture is in the undesired domain: the
albedo with baked directional lighting and a highlight. The desired ones get a specular and a
normal map derived from the albedo and the head's regions (the pbr stage's analytic stand-ins,
shaped by face and hair), so they form triples.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from headgen.errors import HeadgenError
from headgen.train.uv_data import check_folder, load_masks

DEMO_HEADS = ("ict-facekit", "builtin")
UNDESIRED_EVERY = 3
"""Every third demo texture is in the undesired domain (lighting baked in)."""


def demo_captions(count: int) -> list[str]:
    """``count`` distinct prompts: the demo prior's bank first, then combinations of its keywords."""
    from headgen.prior.demo.targets import BANK_PROMPTS

    ages = ["a young", "an old", "a middle-aged"]
    people = ["man", "woman"]
    hair = ["black hair", "brown hair", "blonde hair", "red hair", "grey hair", "white hair"]
    extras = ["", " and a beard", " and a moustache", ", pale", ", dark-skinned", ", tanned"]
    combos = (f"{a} {p} with {h}{e}" for e, a, h, p in itertools.product(extras, ages, hair, people))
    out = list(dict.fromkeys([*BANK_PROMPTS, *combos]))
    if count > len(out):
        raise HeadgenError(f"--count {count}: the demo captions run out at {len(out)}")
    return out[:count]


def _hair_weight(maps: Any, bald: bool) -> Tensor:
    # as headgen.prior.demo.targets.paint_albedo blends the hair colour in (where hair covers the skin)
    if bald:
        return torch.zeros_like(maps.covered, dtype=torch.float32)
    face = maps.regions.get("face", torch.zeros(maps.covered.shape))
    scalp = maps.regions.get("scalp", torch.zeros(maps.covered.shape))
    return scalp.clamp(0, 1) * (1 - 0.6 * face.clamp(0, 1))


def bake_lighting(albedo: Tensor, maps: Any) -> Tensor:
    """The albedo lit by a key light from the upper right with a highlight: an "undesired domain"
    texture (lighting and specularity not removed). Normals are the template's radial directions,
    enough for a smooth shading gradient across the atlas."""
    pos = maps.position
    centre = pos[maps.covered].mean(0)
    n = F.normalize(pos - centre, dim=-1)
    light = F.normalize(torch.tensor([0.6, 0.5, 0.6]), dim=0)
    half = F.normalize(light + torch.tensor([0.0, 0.0, 1.0]), dim=0)
    diffuse = (n @ light).clamp(min=0)
    highlight = (n @ half).clamp(min=0) ** 24
    return (albedo * (0.5 + 0.7 * diffuse[..., None]) + 0.3 * highlight[..., None]).clamp(0, 1)


def demo_pbr(albedo: Tensor, maps: Any, hair: Tensor) -> tuple[Tensor, Tensor]:
    """(specular [T,T,1], normal [T,T,3] unit) for a desired-domain albedo: the pbr stage's analytic
    stand-ins, with the face oilier than the neck and the hair nearly matte."""
    from converters.dreamface_pbr import analytic_normal, analytic_specular

    face = maps.regions.get("face", torch.zeros(maps.covered.shape)).clamp(0, 1)[..., None]
    spec = analytic_specular(albedo) * (0.6 + 0.4 * face)
    spec = spec * (1 - hair[..., None]) + 0.03 * hair[..., None]
    return spec.clamp(0, 1), analytic_normal(albedo)


def _write_png(path: Path, image: Tensor) -> None:
    import imageio.v3 as iio

    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    iio.imwrite(path, arr[..., 0] if arr.shape[-1] == 1 else arr)


def make_demo(out: str | Path, count: int = 16, size: int = 512, head: str = "ict-facekit",
              progress: bool = True) -> Path:
    """Write a demo data set (the layout above) into ``out`` (new or empty); returns it."""
    from headgen.prior.demo.targets import dilate, make_target, texel_maps

    out = Path(out).expanduser()
    if head not in DEMO_HEADS:
        raise HeadgenError(f"--head {head}: the demo data set is made on {' or '.join(DEMO_HEADS)}")
    if count < 1:
        raise HeadgenError(f"--count {count}: make at least one texture")
    if size < 8 or size % 8:
        raise HeadgenError(f"--size {size}: use a multiple of 8 (the VAE's factor), e.g. 512")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HeadgenError(f"{out} exists and is not an empty folder: choose a new one")
    from headgen.heads import load_builtin_head, load_ict_facekit

    model = load_ict_facekit() if head == "ict-facekit" else load_builtin_head()
    maps = texel_maps(model, size)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for folder in ("textures", "masks", "captions", "specular", "normal"):
        (partial / folder).mkdir(parents=True)
    undesired = []
    for i, caption in enumerate(tqdm(demo_captions(count), desc="demo UV textures", disable=not progress)):
        name = f"demo_{i:03d}"
        target = make_target(caption, model, maps)
        hair = _hair_weight(maps, target.spec.bald)
        # B: 1 on the skin, 0 on the hair and outside the atlas's islands (paper 5.1.1)
        mask = (maps.covered & (hair < 0.5)).float()[..., None]
        albedo = target.albedo
        if i % UNDESIRED_EVERY == UNDESIRED_EVERY - 1:
            albedo = dilate(bake_lighting(albedo, maps), maps.covered)
            undesired.append(name)
        else:
            spec, normal = demo_pbr(albedo, maps, hair)
            _write_png(partial / "specular" / f"{name}.png", dilate(spec, maps.covered))
            _write_png(partial / "normal" / f"{name}.png", dilate(normal * 0.5 + 0.5, maps.covered))
        _write_png(partial / "textures" / f"{name}.png", albedo)
        _write_png(partial / "masks" / f"{name}.png", mask)
        (partial / "captions" / f"{name}.txt").write_text(caption + "\n", encoding="utf-8")
    (partial / "dataset.json").write_text(json.dumps({"head": head, "undesired": undesired}, indent=2) + "\n")
    if out.exists():
        out.rmdir()
    partial.rename(out)
    return out


def check_summary(data: str | Path, triples: bool = False) -> str:
    """:meth:`UVDataset.summary` plus the mean non-face fraction of the masks."""
    ds = check_folder(data, need_triples=triples)
    masks = load_masks(ds.samples, ds.size)
    return f"{ds.summary()}; non-face area {100 * (1 - float(masks.mean())):.1f}% of the texels on average"


def main(argv: list[str] | None = None, prog: str = "python -m headgen.train texture-data") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--check", type=Path, metavar="DATA", help="validate a folder and print a summary")
    what.add_argument("--demo", type=Path, metavar="OUT", help="write a demo data set into a new folder")
    p.add_argument("--triples", action="store_true", help="with --check: require (diffuse, specular, normal) triples")
    p.add_argument("--count", type=int, default=16, help="--demo: number of textures (default 16)")
    p.add_argument("--size", type=int, default=512, help="--demo: texture size in texels (default 512)")
    p.add_argument("--head", default="ict-facekit", choices=DEMO_HEADS,
                   help="--demo: the UV atlas (default ict-facekit)")
    args = p.parse_args(argv)
    try:
        if args.demo is not None:
            out = make_demo(args.demo, args.count, args.size, args.head)
            print(check_summary(out))
            print(f"made {out}; train with: python -m headgen.train texture-ldm --data {out} --out TEXTURE_LDM")
        else:
            print(check_summary(args.check, args.triples))
    except HeadgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

