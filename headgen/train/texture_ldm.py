"""DreamFace's texture LDM (paper 5.1, Eq. 9): Stable Diffusion fine-tuned on UV textures, conditioned
on the non-face mask B, jointly with the learned domain tokens C_d / C_u.

    python -m headgen.train texture-data --demo uv-demo            # or your own folder (--check it)
    python -m headgen.train texture-ldm --data uv-demo --model sd15 --out texture-ldm --steps 20000
    python launch.py --config methods/dreamface.yaml models.dreamface_texture.local_dir=texture-ldm

Eq. 9: L = E[ || eps_theta(E(U_d)_t, t, E_text(Q(T, C)), B) - eps ||^2 ] over the texture/caption
pairs and t, with eps_theta (the UNet) and C = {C_d, C_u} trained together:

* the UNet takes 4 + 1 input channels: B, scaled to the latent's size, is concatenated after the
  noisy latent. The pretrained ``conv_in`` is widened with zero weights for the fifth channel, so
  training starts from exactly the pretrained model;
* C_d and C_u are two new token embeddings of the text encoder (``<dreamface-texture>`` and
  ``<dreamface-undesired>``); Q(T, C) appends the texture's domain token to its caption:
  ``"{caption}, <dreamface-texture>"`` (desired domain) or ``", <dreamface-undesired>"``. Only the
  two new rows of the text encoder learn; the rest of it, and the VAE, stay frozen;
* standard noise prediction with the base model's DDPM schedule (its v-prediction for SD 2.x
  bases); latents are drawn from the VAE posterior of each texture at every step.

At inference dual-path SDS appends ``", <dreamface-texture>"`` (C_d) to the prompt and gives an
all-ones mask, as the paper does. The output folder is a Stable Diffusion folder (unet/ with 5
input channels, vae/, text_encoder/ and tokenizer/ that already hold the learned tokens,
scheduler/, model_index.json) plus ``learned_tokens.safetensors`` (the textual-inversion format
``guidance.texture_token_file`` and diffusers' ``load_textual_inversion`` read) and
``training.json``; ``models.dreamface_texture.local_dir=OUT`` is all a run needs.

Not in the paper (chosen here, each an option): captions are dropped (the whole prompt, tokens
included, replaced by "") for 10% of the samples, as Stable Diffusion was trained, so that the
classifier-free guidance the texture path uses keeps an unconditional prediction; C_d / C_u start
from the mean embedding of a short phrase; batches are drawn with replacement.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headgen.errors import HeadgenError
from headgen.models.zoo import load_component
from headgen.train.base_model import base_model, is_random_base, mark_random
from headgen.train.checkpoints import options_from
from headgen.train.trainer import UVTrainer, add_checkpoint_options, add_data_options
from headgen.train.uv_data import UVDataset, load_masks, load_textures

DESIRED_TOKEN = "<dreamface-texture>"
"""C_d: the token dual-path SDS appends (its ``texture_prompt_suffix`` default is ", <dreamface-texture>")."""
UNDESIRED_TOKEN = "<dreamface-undesired>"
"""C_u: the undesired domain's token (used in training only)."""
TOKEN_FILE = "learned_tokens.safetensors"
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def widen_conv_in(unet: Any, channels: int = 5) -> Any:
    """Give ``unet`` ``channels`` input channels; the extra ones get zero weights, so the output is
    the pretrained UNet's whatever they hold."""
    conv = unet.conv_in
    have = conv.in_channels
    if have == channels:
        return unet
    if have > channels:
        raise HeadgenError(f"the base UNet has {have} input channels, more than the texture LDM's {channels}: "
                           "start from a text-to-image Stable Diffusion model")
    wide = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     bias=conv.bias is not None).to(conv.weight)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, :have] = conv.weight
        if conv.bias is not None:
            wide.bias.copy_(conv.bias)
    unet.conv_in = wide
    unet.register_to_config(in_channels=channels)
    return unet


class LearnedTokens(nn.Module):
    """The text encoder's input embedding with trainable rows for the new token ids (the frozen
    table answers every other id). Keeps the trained parameters to the new rows alone, so the
    optimizer state and the checkpoints stay small."""

    def __init__(self, base: nn.Embedding, ids: list[int], init: Tensor):
        super().__init__()
        self.base = base
        self.register_buffer("ids", torch.tensor(ids), persistent=False)
        self.vectors = nn.Parameter(init.clone())

    @property
    def weight(self) -> Tensor:
        return self.base.weight

    def forward(self, input_ids: Tensor) -> Tensor:
        out = self.base(input_ids)
        hit = input_ids[..., None] == self.ids.to(input_ids.device)  # [..., K]
        if not bool(hit.any()):
            return out
        new = (hit.to(out.dtype) @ self.vectors.to(out.dtype))  # the matching row (ids are distinct)
        return torch.where(hit.any(-1, keepdim=True), new, out)

    def bake(self) -> nn.Embedding:
        """The plain embedding with the learned rows written in."""
        with torch.no_grad():
            self.base.weight[self.ids] = self.vectors.detach().to(self.base.weight)
        return self.base


def add_domain_tokens(tokenizer: Any, text_encoder: Any, tokens: tuple[str, str], init_texts: tuple[str, str]
                      ) -> LearnedTokens:
    """Register C_d, C_u in the tokenizer, each starting from the mean embedding of a phrase, and
    install a :class:`LearnedTokens` in the text encoder."""
    vocab = tokenizer.get_vocab()
    for token in tokens:
        if token in vocab:
            raise HeadgenError(f"token {token!r} is already in the base model's tokenizer: start from a model without "
                               "it, or name the tokens with --desired-token / --undesired-token")
    if tokens[0] == tokens[1]:
        raise HeadgenError(f"--desired-token and --undesired-token are both {tokens[0]!r}: use two names")
    table = text_encoder.get_input_embeddings().weight.detach()
    init = []
    for token, text in zip(tokens, init_texts):
        ids = tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            raise HeadgenError(f"the start phrase {text!r} of {token} has no tokens: give a word or two")
        init.append(table[ids].mean(0))
    tokenizer.add_tokens(list(tokens))
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # the new rows are set below
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    learned = LearnedTokens(text_encoder.get_input_embeddings(), ids, torch.stack(init))
    text_encoder.set_input_embeddings(learned)
    return learned


def prompt_with_domain(caption: str, token: str) -> str:
    """Q(T, C): the caption with its domain token appended (as dual-path SDS appends C_d at inference)."""
    return f"{caption}, {token}"


class TextureLDMTrainer(UVTrainer):
    """Eq. 9 on one data folder; ``run()`` trains to ``options['steps']`` and writes the model."""

    desc = "texture LDM"

    # ------------------------------------------------------------------ setup
    def _check_options(self) -> None:
        super()._check_options()
        if not 0.0 <= self.o["caption_dropout"] < 1.0:
            raise HeadgenError(f"--caption-dropout {self.o['caption_dropout']}: a probability in [0, 1)")

    def _prepare(self, ds: UVDataset) -> None:
        self._load()
        self._encode(ds)

    def _optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW([
            {"params": list(self.unet.parameters()), "lr": self.o["lr"], "weight_decay": 1e-2},
            {"params": [self.learned.vectors], "lr": self.o["token_lr"], "weight_decay": 0.0},
        ])

    def _load(self) -> None:
        o = self.o
        self.name, self.spec = base_model(o["model"], o["pretrained"])
        dev = self.device
        self.tokenizer = load_component(self.name, self.spec, "tokenizer", dev)
        self.text_encoder = load_component(self.name, self.spec, "text_encoder", dev, dtype=torch.float32)
        self.vae = load_component(self.name, self.spec, "vae", dev, dtype=torch.float32)
        self.unet = widen_conv_in(load_component(self.name, self.spec, "unet", dev, dtype=torch.float32))
        self.scheduler = load_component(self.name, self.spec, "scheduler", dev)
        self.tokens = (o["desired_token"], o["undesired_token"])
        self.learned = add_domain_tokens(self.tokenizer, self.text_encoder, self.tokens,
                                         (o["init_desired"], o["init_undesired"]))
        self.unet.requires_grad_(True).train()
        if o["gradient_checkpointing"]:
            self.unet.enable_gradient_checkpointing()

    def _encode(self, ds: UVDataset) -> None:
        """Posterior mean and std of every texture (scaled like every latent here), B at latent size,
        and the token ids of each caption with its domain token."""
        res = self.o["resolution"] or ds.size
        scale = float(getattr(self.vae.config, "scaling_factor", 0.18215))
        means, stds, masks = [], [], []
        with torch.no_grad():
            for i in range(0, len(ds.samples), 8):  # read in chunks: only latent-sized data stays in memory
                chunk = ds.samples[i : i + 8]
                dist = self.vae.encode(load_textures(chunk, res).to(self.device)).latent_dist
                means.append(dist.mean * scale)
                stds.append(dist.std * scale)
                masks.append(load_masks(chunk, means[-1].shape[-1]))
        self.mean, self.std = torch.cat(means), torch.cat(stds)
        self.masks = torch.cat(masks).to(self.device)
        texts = [prompt_with_domain(s.caption, self.tokens[0] if s.domain == "desired" else self.tokens[1])
                 for s in ds.samples]
        self.ids = self._tokenize(texts)
        self.empty_ids = self._tokenize([""])

    def _tokenize(self, texts: list[str]) -> Tensor:
        return self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids.to(self.device)

    # ------------------------------------------------------------------ state
    def _weights(self) -> dict[str, Tensor]:
        return {**{f"unet.{k}": v for k, v in self.unet.state_dict().items()}, "tokens": self.learned.vectors.data}

    def _load_weights(self, weights: dict[str, Tensor]) -> None:
        self.unet.load_state_dict({k.removeprefix("unet."): v for k, v in weights.items() if k.startswith("unet.")})
        with torch.no_grad():
            self.learned.vectors.copy_(weights["tokens"])

    # ------------------------------------------------------------------ training
    def step(self) -> float:
        o = self.o
        n, b = len(self.mean), o["batch_size"]
        g = self.g
        # every draw from one CPU generator, in a fixed order: a resumed run replays them exactly
        idx = torch.randint(0, n, (b,), generator=g)
        posterior = torch.randn((b, *self.mean.shape[1:]), generator=g).to(self.device)
        noise = torch.randn((b, *self.mean.shape[1:]), generator=g).to(self.device)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=g).to(self.device)
        drop = (torch.rand(b, generator=g) < o["caption_dropout"]).to(self.device)
        idx = idx.to(self.device)
        z0 = self.mean[idx] + self.std[idx] * posterior
        z_t = self.scheduler.add_noise(z0, noise, t)
        ids = torch.where(drop[:, None], self.empty_ids.expand(b, -1), self.ids[idx])
        hidden = self.text_encoder(ids)[0]
        pred = self.unet(torch.cat([z_t, self.masks[idx]], 1), t, encoder_hidden_states=hidden).sample
        if self.scheduler.config.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(z0, noise, t)
        else:
            target = noise
        loss = F.mse_loss(pred.float(), target.float())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach().item()

    # ------------------------------------------------------------------ output
    def _write_model(self, folder: Path, ds: UVDataset) -> dict[str, Any]:
        """The diffusers folder ``models.dreamface_texture.local_dir`` loads."""
        from safetensors.torch import save_file

        vectors = self.learned.vectors.detach().cpu()
        self.text_encoder.set_input_embeddings(self.learned.bake())
        self.unet.eval()
        for name in COMPONENTS:
            getattr(self, name).save_pretrained(folder / name)
        save_file({tok: vec[None].contiguous() for tok, vec in zip(self.tokens, vectors)}, str(folder / TOKEN_FILE))
        self._write_index(folder)
        if is_random_base(self.spec):
            mark_random(folder)
        return {
            "what": "DreamFace texture LDM (paper 5.1, Eq. 9): UNet with 4 latent + 1 mask input channels",
            "head": ds.head, "data": str(ds.root), "textures": len(ds.samples), "size": self.mean.shape[-1] * 8,
            "base": {"model": self.name, "hub_id": self.spec.hub_id, "local_dir": self.spec.local_dir},
            "steps": self.o["steps"], "tokens": {"desired (C_d)": self.tokens[0], "undesired (C_u)": self.tokens[1]},
            "mask": "channel 5 = B (1 face, 0 non-face); inference gives all ones",
            "prompt": f"caption + ', {self.tokens[0]}' (desired) or ', {self.tokens[1]}' (undesired)",
        }

    def _write_index(self, folder: Path) -> None:
        import diffusers

        index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
                 "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None]}
        for name in COMPONENTS:
            obj = getattr(self, name)
            index[name] = [obj.__class__.__module__.split(".")[0], obj.__class__.__name__]
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, "UV texture folder (python -m headgen.train texture-data)",
                     "base model: a name under models: of configs/models.yaml")
    p.add_argument("--lr", type=float, default=1.0e-5, help="UNet learning rate (AdamW)")
    p.add_argument("--token-lr", type=float, default=5.0e-3, help="learning rate of C_d / C_u")
    p.add_argument("--resolution", type=int, help="train at this size (default: the data's)")
    p.add_argument("--caption-dropout", type=float, default=0.1,
                   help="share of samples trained with the empty prompt (classifier-free guidance)")
    p.add_argument("--desired-token", default=DESIRED_TOKEN, help=f"C_d (default {DESIRED_TOKEN})")
    p.add_argument("--undesired-token", default=UNDESIRED_TOKEN, help=f"C_u (default {UNDESIRED_TOKEN})")
    p.add_argument("--init-desired", default="diffuse skin texture", help="phrase whose mean embedding starts C_d")
    p.add_argument("--init-undesired", default="lit photo", help="phrase whose mean embedding starts C_u")
    add_checkpoint_options(p)
    p.add_argument("--gradient-checkpointing", action="store_true", help="less memory, slower steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m headgen.train texture-ldm") -> int:
    args = parser(prog).parse_args(argv)
    try:
        out = TextureLDMTrainer(options_from(args)).run()
    except HeadgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    suffix = "" if args.desired_token == DESIRED_TOKEN else (
        f" stages.texture-latent.guidance.texture_prompt_suffix=', {args.desired_token}'"
        f" stages.texture-image.guidance.texture_prompt_suffix=', {args.desired_token}'")
    print(f"saved the texture LDM to {out}; use it with: python launch.py --config methods/dreamface.yaml "
          f"models.dreamface_texture.local_dir={out}{suffix}")
    return 0
