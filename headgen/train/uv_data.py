"""A folder of UV textures for DreamFace's texture LDM (paper 5.1) and its PBR decoders (Eq. 15).

Layout (``DATA/``)::

    dataset.json          {"head": "ict-facekit", "undesired": ["NAME", ...]}
    textures/NAME.png     diffuse UV texture U_d: RGB (an alpha channel is ignored), square
    masks/NAME.png        non-face mask B: one channel, white (1) = face, black (0) = non-face
    captions/NAME.txt     one caption T (plain text, one line)
    specular/NAME.png     optional specularity map U_s: one channel (or RGB, averaged)
    normal/NAME.png       optional tangent-space normal map U_n: RGB, (n + 1) / 2, OpenGL green-up

* ``head`` names the head model whose UV atlas the textures are in (``ict-facekit``: the skin atlas
  of :mod:`headgen.heads.ict`, DreamFace's training layout; ``builtin``; ``flame``). Texture rows
  run as the head's texture maps do (row 0 is the top of the PNG), so a texture made by
  ``texture-data --demo`` or exported by a run (``diffuse.png``) is already in place.
* The mask is the paper's B as it is: "non-face regions are marked as zero and the rest as one"
  (hair, caps, markers, holes, the atlas's unused area); grey values are kept as fractions.
  Inference gives an all-ones mask (``guidance.mask_channel``).
* ``undesired`` lists the textures of the undesired domain Omega_u (lighting or specularity not
  removed); every other texture is in the desired domain Omega_d. Their captions get the learned
  token C_u or C_d (Sec. 5.1.2).
* Every image has the same square size, a multiple of 8 (the VAE's factor).
* A (diffuse, specular, normal) triple is a name with both ``specular/`` and ``normal/`` maps; the
  PBR decoders train on the triples only (the paper's 370 photometric captures), the texture LDM on
  every texture.

:func:`check_folder` validates a folder and raises ONE :class:`HeadgenError` listing every problem
found and how to fix it; the loaders read what it accepted.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.errors import HeadgenError

ATLASES = ("ict-facekit", "builtin", "flame")
"""Head models whose UV atlas a data set may name (``dataset.json``'s ``head``)."""
FOLDERS = ("textures", "masks", "captions", "specular", "normal")
RGB_MODES = ("RGB", "RGBA")
GREY_MODES = ("L", "1", "I;16", "I;16B", "I;16L", "I")
LAYOUT_HINT = (
    "expected layout: DATA/dataset.json {\"head\": \"ict-facekit\"}, DATA/textures/NAME.png (RGB), "
    "DATA/masks/NAME.png (one channel, white = face, black = non-face), DATA/captions/NAME.txt (one caption), "
    "optional DATA/specular/NAME.png and DATA/normal/NAME.png; see `python -m headgen.train texture-data --help`, "
    "or make an example with `python -m headgen.train texture-data --demo OUT`"
)
MAX_NAMES = 8
"""Names listed per problem before "... and N more"."""


@dataclass(frozen=True)
class UVSample:
    name: str
    texture: Path
    mask: Path
    caption: str
    domain: Literal["desired", "undesired"]
    specular: Path | None = None
    normal: Path | None = None


@dataclass
class UVDataset:
    """A validated folder (:func:`check_folder`)."""

    root: Path
    head: str
    size: int
    samples: list[UVSample] = field(default_factory=list)

    @property
    def triples(self) -> list[UVSample]:
        """The samples with both a specular and a normal map (the PBR decoders' data)."""
        return [s for s in self.samples if s.specular is not None and s.normal is not None]

    def fingerprint(self) -> str:
        """A digest of the names, domains, captions and file sizes (what a resumed run must find again)."""
        items = [(s.name, s.domain, s.caption, *(p.stat().st_size if p else None
                                                 for p in (s.texture, s.mask, s.specular, s.normal)))
                 for s in self.samples]
        return hashlib.sha1(json.dumps([self.head, self.size, items]).encode()).hexdigest()[:16]

    def summary(self) -> str:
        domains = Counter(s.domain for s in self.samples)
        return (f"{self.root}: {len(self.samples)} textures of {self.size}x{self.size} in the {self.head} UV atlas "
                f"({domains['desired']} desired, {domains['undesired']} undesired domain); "
                f"{len(self.triples)} (diffuse, specular, normal) triples")


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_NAMES])
    return shown + (f" ... and {len(items) - MAX_NAMES} more" if len(items) > MAX_NAMES else "")


class _Problems:
    """Problems found in a folder, grouped so that many files with one fault make one line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.grouped: dict[str, list[str]] = {}

    def add(self, line: str) -> None:
        self.lines.append(line)

    def group(self, what: str, name: str) -> None:
        self.grouped.setdefault(what, []).append(name)

    def raise_if_any(self, root: Path) -> None:
        lines = self.lines + [what.format(names=_names(names), n=len(names)) for what, names in self.grouped.items()]
        if lines:
            listed = "\n".join(f"  - {line}" for line in lines)
            raise HeadgenError(f"{root} is not a usable UV texture folder ({len(lines)} problem"
                               f"{'s' if len(lines) > 1 else ''}):\n{listed}\n{LAYOUT_HINT}")


def _pngs(folder: Path, problems: _Problems) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    out = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.suffix.lower() != ".png" or not path.is_file():
            problems.group(f"{folder.name}/: not PNG files: {{names}} (convert them to .png or move them out)",
                           path.name)
            continue
        out[path.stem] = path
    return out


def _image_info(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) after checking that the file decodes."""
    from PIL import Image

    with Image.open(path) as im:
        mode, size = im.mode, im.size
        im.load()  # decodes every row: a truncated or corrupt file fails here, not mid-training
    return mode, size


def _read_dataset_json(root: Path, problems: _Problems) -> tuple[str | None, list[str]]:
    path = root / "dataset.json"
    if not path.is_file():
        problems.add(f"no dataset.json: write {{\"head\": \"ict-facekit\"}} (the head model whose UV atlas the "
                     f"textures are in: {' | '.join(ATLASES)})")
        return None, []
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.add(f"dataset.json is not readable JSON ({exc}); write {{\"head\": \"ict-facekit\"}}")
        return None, []
    if not isinstance(meta, dict):
        problems.add("dataset.json must be an object like {\"head\": \"ict-facekit\", \"undesired\": [...]}")
        return None, []
    unknown = sorted(set(meta) - {"head", "undesired"})
    if unknown:
        problems.add(f"dataset.json: unknown key(s) {', '.join(unknown)}; the keys are head and undesired")
    head = meta.get("head")
    if head not in ATLASES:
        problems.add(f"dataset.json: head must be one of {', '.join(ATLASES)} (the UV atlas of the textures), "
                     f"got {head!r}")
        head = None
    undesired = meta.get("undesired", [])
    if not isinstance(undesired, list) or not all(isinstance(n, str) for n in undesired):
        problems.add("dataset.json: undesired must be a list of texture names (file stems), e.g. [\"scan_012\"]")
        undesired = []
    return head, undesired


def check_folder(root: str | Path, *, need_triples: bool = False) -> UVDataset:
    """Validate ``root`` (the layout above); one :class:`HeadgenError` lists every problem.

    ``need_triples``: the PBR decoders' data, so at least one complete (diffuse, specular, normal)
    triple is required and half a triple (one map without the other) is a problem.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise HeadgenError(f"{root}: no such folder; {LAYOUT_HINT}")
    problems = _Problems()
    head, undesired = _read_dataset_json(root, problems)
    files = {f: _pngs(root / f, problems) for f in FOLDERS if f != "captions"}
    textures = files["textures"]
    if not textures:
        problems.add("textures/ is missing or holds no PNG: put the diffuse UV textures there as NAME.png")
    captions_dir = root / "captions"
    captions: dict[str, str] = {}
    if captions_dir.is_dir():
        for path in sorted(captions_dir.iterdir()):
            if path.name.startswith("."):
                continue
            if path.suffix.lower() != ".txt":
                problems.group("captions/: not .txt files: {names} (one NAME.txt per texture)", path.name)
                continue
            try:
                text = " ".join(path.read_text(encoding="utf-8").split())
            except (OSError, UnicodeDecodeError) as exc:
                problems.add(f"captions/{path.name}: not readable UTF-8 text ({exc})")
                continue
            if not text:
                problems.group("empty captions: {names} (write one description per file)", path.name)
                continue
            captions[path.stem] = text
    for name in textures:
        if name not in files["masks"]:
            problems.group("{n} texture(s) without a mask: {names} (add masks/NAME.png: one channel, white = face, "
                           "black = non-face)", name)
        if name not in captions and not (captions_dir / f"{name}.txt").is_file():
            problems.group("{n} texture(s) without a caption: {names} (add captions/NAME.txt with one description)",
                           name)
    for folder in ("masks", "specular", "normal"):
        for name in files[folder]:
            if name not in textures:
                problems.group(f"{folder}/ files without a texture: {{names}} (a typo in the name? each needs "
                               f"textures/NAME.png)", f"{name}.png")
    for name in captions:
        if name not in textures:
            problems.group("captions without a texture: {names} (a typo in the name? each needs textures/NAME.png)",
                           f"{name}.txt")
    for name in undesired:
        if name not in textures:
            problems.group("dataset.json: undesired names without a texture: {names}", name)

    # Every image: decodes, right channels, square, one size, a multiple of 8.
    sizes: dict[str, tuple[int, int]] = {}
    for folder, modes, what in (("textures", RGB_MODES, "RGB"), ("masks", GREY_MODES, "one channel (grey)"),
                                ("specular", GREY_MODES + RGB_MODES, "grey or RGB"), ("normal", RGB_MODES, "RGB")):
        for path in files[folder].values():
            rel = f"{folder}/{path.name}"
            try:
                mode, size = _image_info(path)
            except Exception as exc:  # PIL raises many types for a bad file; each is reported, not hidden
                problems.add(f"{rel}: unreadable image ({type(exc).__name__}: {exc}); re-export it as PNG")
                continue
            if mode not in modes:
                hint = " (save it as a single-channel grey PNG)" if folder == "masks" else ""
                problems.group(f"{folder}/: wrong channels: {{names}}: need {what}{hint}", f"{path.name} is {mode}")
            sizes[rel] = size
    if sizes:
        common = Counter(sizes.values()).most_common(1)[0][0]
        odd = [f"{rel} is {w}x{h}" for rel, (w, h) in sizes.items() if (w, h) != common]
        if odd:
            problems.add(f"images differ in size (most are {common[0]}x{common[1]}): {_names(odd)}; resize them "
                         "all to one square size")
        w, h = common
        if w != h:
            problems.add(f"the images are {w}x{h}: UV textures must be square")
        elif w % 8:
            problems.add(f"the images are {w}x{w}: the size must be a multiple of 8 (the VAE's factor), e.g. "
                         f"{max(8, w // 8 * 8)}")
        size = w
    else:
        size = 0
    half = [n for n in textures if (n in files["specular"]) != (n in files["normal"])]
    full = [n for n in textures if n in files["specular"] and n in files["normal"]]
    if need_triples:
        for name in half:
            has = "specular" if name in files["specular"] else "normal"
            lacks = "normal" if has == "specular" else "specular"
            problems.group("half (diffuse, specular, normal) triples: {names} (add the missing map or remove the "
                           "other one)", f"{name} has {has}/ but no {lacks}/")
        if textures and not full:
            problems.add("no (diffuse, specular, normal) triple: the PBR decoders need specular/NAME.png and "
                         "normal/NAME.png beside textures/NAME.png")
    problems.raise_if_any(root)
    assert head is not None
    samples = [
        UVSample(name, path, files["masks"][name], captions[name], "undesired" if name in undesired else "desired",
                 files["specular"].get(name), files["normal"].get(name))
        for name, path in textures.items()
    ]
    return UVDataset(root, head, size, samples)


# ---------------------------------------------------------------------------------------- loading
def read_image(path: Path) -> Tensor:
    """[C,H,W] float in [0,1] (8- or 16-bit PNG; an alpha channel dropped)."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im)
        mode = im.mode
    if mode == "1":
        arr = arr.astype(np.float32)
    elif arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    else:  # 16-bit grey PNGs open as I;16 / I
        arr = arr.astype(np.float32) / 65535.0
    if arr.ndim == 2:
        arr = arr[..., None]
    if mode == "RGBA":
        arr = arr[..., :3]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)


def resize(images: Tensor, size: int) -> Tensor:
    """[N,C,H,W] to [N,C,size,size]: area averaging down (as the paper scales B to the latent), bilinear up."""
    if images.shape[-1] == size:
        return images
    if images.shape[-1] > size:
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def load_textures(samples: list[UVSample], resolution: int) -> Tensor:
    """[N,3,R,R] diffuse textures in [-1, 1] (the VAE's input range)."""
    return resize(torch.stack([read_image(s.texture) for s in samples]), resolution) * 2 - 1


def load_masks(samples: list[UVSample], size: int) -> Tensor:
    """[N,1,s,s] non-face masks B in [0, 1] (1 = face), scaled to ``size`` (the latent's)."""
    return resize(torch.stack([read_image(s.mask)[:1] for s in samples]), size).clamp(0, 1)


def load_specular(samples: list[UVSample], resolution: int) -> Tensor:
    """[N,3,R,R] specularity in [-1, 1], grey in three channels (the decoder's output layout;
    the pbr stage averages the channels)."""
    grey = torch.stack([read_image(s.specular).mean(0, keepdim=True) for s in samples if s.specular])
    return (resize(grey, resolution) * 2 - 1).expand(-1, 3, -1, -1).contiguous()


def load_normals(samples: list[UVSample], resolution: int) -> Tensor:
    """[N,3,R,R] unit tangent-space normals (the [-1, 1] image the decoder outputs: the pbr stage
    reads ``normalize(decoded)``)."""
    encoded = torch.stack([read_image(s.normal) for s in samples if s.normal])
    return F.normalize(resize(encoded, resolution) * 2 - 1, dim=1)
