"""DreamFace's PBR decoders D_s / D_n (paper 5.3, Eq. 15): the diffuse latent to specular and normal maps.

    python -m headgen.train texture-data --check uv-data --triples
    python -m headgen.train pbr-decoders --data uv-data --model sd15 --out pbr-decoders --steps 20000
    python launch.py --config methods/dreamface.yaml \\
        'models.dreamface_specular={hub_id: local/dreamface-specular, local_dir: pbr-decoders/specular}' \\
        'models.dreamface_normal={hub_id: local/dreamface-normal, local_dir: pbr-decoders/normal}' \\
        stages.pbr.converter.specular_decoder=dreamface_specular stages.pbr.converter.normal_decoder=dreamface_normal

Eq. 15: L = l(D_s(u_d), U_s) + l(D_n(u_d), U_n) with u_d = E(U_d) over the (diffuse, specular,
normal) triples of the data folder. E is the base model's frozen VAE encoder (u_d is its posterior
mean: the paper writes u_d = E(U_d) as one code); each decoder (``post_quant_conv`` + ``decoder``)
starts as a copy of the VAE's and is trained. Targets are what the pbr stage reads back from a
decoder: the specular map as grey in three channels, the normal map as unit tangent-space normals,
both in the decoder's [-1, 1] range.

The paper's l is "the same loss terms described in Stable Diffusion": an L1 reconstruction term, an
LPIPS perceptual term and a patch-GAN adversarial term. Only the L1 term is implemented here (it
needs no other weights); ``--perceptual-weight`` / ``--adversarial-weight`` above 0 raise
NotImplementedError (LPIPS needs VGG-16 weights and its linear heads, which the project does not
ship, and SD's adversarial term starts after 50k steps).

Each output is a VAE-layout folder (``OUT/specular/vae/``, ``OUT/normal/vae/``: the base VAE with
the trained decoder) that ``models.NAME.local_dir=OUT/specular`` loads for the pbr stage's
``specular_decoder`` / ``normal_decoder``; ``OUT/training.json`` records the data and options.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.errors import HeadgenError
from headgen.models.zoo import load_component
from headgen.train.base_model import base_model, is_random_base, mark_random
from headgen.train.checkpoints import options_from
from headgen.train.trainer import UVTrainer, add_checkpoint_options, add_data_options
from headgen.train.uv_data import UVDataset, load_normals, load_specular, load_textures

MAPS = ("specular", "normal")


def decoder_parameters(vae: Any) -> list[torch.nn.Parameter]:
    """What D_s / D_n train: the decoder half of the VAE (the latent's first convolution included)."""
    return [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()] if vae.post_quant_conv is not None \
        else list(vae.decoder.parameters())


class PBRDecodersTrainer(UVTrainer):
    """Eq. 15 on the triples of one data folder; ``run()`` trains and writes both decoders."""

    desc = "PBR decoders"
    need_triples = True

    def _check_options(self) -> None:
        o = self.o
        if o["perceptual_weight"] > 0:
            raise NotImplementedError("pbr-decoders: the LPIPS perceptual term of Stable Diffusion's loss is not "
                                      "implemented (it needs VGG-16 and LPIPS weights); use --perceptual-weight 0")
        if o["adversarial_weight"] > 0:
            raise NotImplementedError("pbr-decoders: the patch-GAN adversarial term of Stable Diffusion's loss is not "
                                      "implemented; use --adversarial-weight 0")
        super()._check_options()

    def _prepare(self, ds: UVDataset) -> None:
        o = self.o
        self.name, self.spec = base_model(o["model"], o["pretrained"])
        vae = load_component(self.name, self.spec, "vae", self.device, dtype=torch.float32)
        triples = ds.triples
        res = o["resolution"] or ds.size
        diffuse = load_textures(triples, res)
        with torch.no_grad():
            self.latents = torch.cat([vae.encode(c.to(self.device)).latent_dist.mean for c in diffuse.split(8)])
        self.targets = {"specular": load_specular(triples, res).to(self.device),
                        "normal": load_normals(triples, res).to(self.device)}
        self.decoders = {}
        for m in MAPS:
            dec = copy.deepcopy(vae)
            for p in decoder_parameters(dec):
                p.requires_grad_(True)
            self.decoders[m] = dec.train()

    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for m in MAPS for p in decoder_parameters(self.decoders[m])]
        # Adam with betas (0.5, 0.9): Stable Diffusion's autoencoder training
        return torch.optim.Adam(params, lr=self.o["lr"], betas=(0.5, 0.9))

    def step(self) -> float:
        b = self.o["batch_size"]
        idx = torch.randint(0, len(self.latents), (b,), generator=self.g).to(self.device)
        u = self.latents[idx]
        loss = sum(F.l1_loss(self.decoders[m].decode(u).sample.float(), self.targets[m][idx]) for m in MAPS)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach().item()

    def _weights(self) -> dict[str, Tensor]:
        return {f"{m}.{k}": v for m in MAPS for k, v in self.decoders[m].state_dict().items()}

    def _load_weights(self, weights: dict[str, Tensor]) -> None:
        for m in MAPS:
            self.decoders[m].load_state_dict({k.removeprefix(f"{m}."): v for k, v in weights.items()
                                              if k.startswith(f"{m}.")})

    def _write_model(self, folder: Path, ds: UVDataset) -> dict[str, Any]:
        for m in MAPS:
            self.decoders[m].eval().save_pretrained(folder / m / "vae")
            if is_random_base(self.spec):
                mark_random(folder / m)
        return {
            "what": "DreamFace PBR decoders D_s / D_n (paper 5.3, Eq. 15): VAE decoders of the diffuse latent",
            "head": ds.head, "data": str(ds.root), "triples": len(ds.triples), "size": self.o["resolution"] or ds.size,
            "base": {"model": self.name, "hub_id": self.spec.hub_id, "local_dir": self.spec.local_dir},
            "loss": "L1 (Stable Diffusion's reconstruction term; no LPIPS, no adversarial term)",
            "outputs": {"specular": "grey in 3 channels, [-1, 1]", "normal": "unit tangent-space normal, OpenGL"},
        }


def overrides(out: Path) -> list[str]:
    """The launch.py overrides that give a run's pbr stage the decoders in ``out``."""
    return [f"models.dreamface_specular={{hub_id: local/dreamface-specular, local_dir: {out / 'specular'}}}",
            f"models.dreamface_normal={{hub_id: local/dreamface-normal, local_dir: {out / 'normal'}}}",
            "stages.pbr.converter.specular_decoder=dreamface_specular",
            "stages.pbr.converter.normal_decoder=dreamface_normal"]


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, "UV texture folder with (diffuse, specular, normal) triples",
                     "base model whose VAE starts both decoders (under models:)")
    p.add_argument("--lr", type=float, default=1.0e-4, help="learning rate (Adam, betas 0.5, 0.9)")
    p.add_argument("--resolution", type=int, help="train at this size (default: the data's)")
    p.add_argument("--perceptual-weight", type=float, default=0.0, help="LPIPS term (not implemented: keep 0)")
    p.add_argument("--adversarial-weight", type=float, default=0.0, help="patch-GAN term (not implemented: keep 0)")
    add_checkpoint_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m headgen.train pbr-decoders") -> int:
    args = parser(prog).parse_args(argv)
    try:
        out = PBRDecodersTrainer(options_from(args)).run()
    except (HeadgenError, NotImplementedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"saved D_s to {out / 'specular'} and D_n to {out / 'normal'}; use them with: python launch.py --config "
          "methods/dreamface.yaml " + " ".join(f"'{o}'" if " " in o else o for o in overrides(out)))
    return 0
