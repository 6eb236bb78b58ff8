"""Textual inversion: learn a token embedding (HeadSculpt's ``<back-view>``) from a folder of images.

    python -m headgen.train textual-inversion --images back_views/ --token "<back-view>" \\
        --init-token back --model sd15 --steps 3000 --out back-view.safetensors

The standard objective: with everything frozen but the new token's input embedding, minimise
``||eps - eps_theta(z_t, t, text("a photo of <token> ..."))||^2`` over the images' VAE latents.
The result is a safetensors file ``{token: [1, D]}``, the format ``prompt.token_file`` loads (and
diffusers' ``load_textual_inversion`` reads).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from headgen.config.recipe import ModelSpec
from headgen.errors import HeadgenError
from headgen.models.zoo import load_component
from headgen.rundir import atomic_write

TEMPLATES = ["a photo of {}", "a rendering of {}", "a close-up photo of {}", "a photo of the {}", "a good photo of {}"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class InversionConfig:
    images: Path
    token: str
    init_token: str
    steps: int = 3000
    lr: float = 5.0e-3
    batch_size: int = 4
    resolution: int = 512
    seed: int = 0


def load_images(folder: Path, resolution: int) -> Tensor:
    """[N,3,R,R] in [-1, 1] (centre-cropped to a square, resized)."""
    import imageio.v3 as iio

    if not folder.is_dir():
        raise HeadgenError(f"--images {folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise HeadgenError(f"--images {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    out = []
    for path in files:
        img = torch.from_numpy(iio.imread(path)).float() / 255.0
        if img.dim() == 2:
            img = img[..., None].expand(-1, -1, 3)
        img = img[..., :3].permute(2, 0, 1)
        h, w = img.shape[1:]
        s = min(h, w)
        img = img[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        img = F.interpolate(img[None], size=(resolution, resolution), mode="bilinear", antialias=True,
                            align_corners=False)[0]
        out.append(img * 2 - 1)
    return torch.stack(out)


def learn_token(cfg: InversionConfig, spec: ModelSpec, name: str = "model", device: str = "cpu",
                progress: bool = True) -> Tensor:
    """Optimise the new token's embedding; returns it as [1, D]."""
    dev = torch.device(device)
    tokenizer = load_component(name, spec, "tokenizer", dev)
    text_encoder = load_component(name, spec, "text_encoder", dev, dtype=torch.float32)
    unet = load_component(name, spec, "unet", dev)
    vae = load_component(name, spec, "vae", dev)
    scheduler = load_component(name, spec, "scheduler", dev)
    if cfg.token in tokenizer.get_vocab():
        raise HeadgenError(f"--token {cfg.token!r} is already a word of the tokenizer; pick a new one like <my-token>")
    init_ids = tokenizer.encode(cfg.init_token, add_special_tokens=False)
    if len(init_ids) != 1:
        raise HeadgenError(f"--init-token {cfg.init_token!r} must be a single token (it is {len(init_ids)})")
    tokenizer.add_tokens([cfg.token])
    token_id = tokenizer.convert_tokens_to_ids(cfg.token)
    text_encoder.resize_token_embeddings(len(tokenizer))
    emb = text_encoder.get_input_embeddings()
    with torch.no_grad():
        emb.weight[token_id] = emb.weight[init_ids[0]]
    original = emb.weight.detach().clone()
    text_encoder.requires_grad_(False)
    emb.weight.requires_grad_(True)
    opt = torch.optim.AdamW([emb.weight], lr=cfg.lr, weight_decay=0.0)

    images = load_images(cfg.images, cfg.resolution).to(dev)
    scale = float(getattr(vae.config, "scaling_factor", 0.18215))
    with torch.no_grad():
        chunks = [images[i : i + 8].to(vae.dtype) for i in range(0, len(images), 8)]
        latents = torch.cat([vae.encode(c).latent_dist.mean for c in chunks]).float() * scale
    alphas = scheduler.alphas_cumprod.to(dev)
    g = torch.Generator().manual_seed(cfg.seed)
    keep = torch.ones(len(tokenizer), dtype=torch.bool, device=dev)
    keep[token_id] = False
    for _ in tqdm(range(cfg.steps), desc="textual inversion", disable=not progress):
        idx = torch.randint(0, len(latents), (cfg.batch_size,), generator=g)
        z0 = latents[idx.to(dev)]
        noise = torch.randn(z0.shape, generator=g).to(dev)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=g).to(dev)
        a = alphas[t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        texts = [TEMPLATES[int(i)].format(cfg.token) for i in torch.randint(0, len(TEMPLATES), (cfg.batch_size,),
                                                                            generator=g)]
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(dev)
        hidden = text_encoder(ids)[0].to(unet.dtype)
        pred = unet(z_t.to(unet.dtype), t, encoder_hidden_states=hidden).sample.float()
        loss = F.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():  # only the new token's row may change
            emb.weight[keep] = original[keep]
    return emb.weight[token_id].detach().cpu()[None]


def save_token(path: Path, token: str, vector: Tensor) -> Path:
    from safetensors.torch import save_file

    return atomic_write(path, lambda p: save_file({token: vector.contiguous()}, str(p)))


def main(argv: list[str] | None = None, prog: str = "python -m headgen.train textual-inversion") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, type=Path, help="folder of training images")
    p.add_argument("--token", required=True, help="the new token, e.g. <back-view>")
    p.add_argument("--init-token", required=True, help="an existing single-token word to start from, e.g. back")
    p.add_argument("--model", default="sd15", help="a model of configs/models.yaml (default sd15)")
    p.add_argument("--model-dir", help="a local Stable Diffusion folder (overrides --model's location)")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=5.0e-3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    try:
        from headgen.config.compose import compose

        models = compose("configs/models.yaml", [])["models"]
        if args.model not in models:
            raise HeadgenError(f"--model {args.model}: not in configs/models.yaml ({', '.join(models)})")
        spec = ModelSpec(**{**models[args.model], **({"local_dir": args.model_dir} if args.model_dir else {})})
        cfg = InversionConfig(args.images, args.token, args.init_token, args.steps, args.lr, args.batch_size,
                              args.resolution, args.seed)
        vector = learn_token(cfg, spec, args.model, args.device)
        path = save_token(args.out, args.token, vector)
    except HeadgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"saved {args.token} ({vector.shape[-1]}-d) to {path}; use it with prompt.token_file={path}")
    return 0
