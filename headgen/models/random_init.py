"""Randomly initialised models with Stable Diffusion's layout, saved with ``save_pretrained``.

Tests build ``tiny`` ones (a few hundred kB) and load them back through the same
``from_pretrained`` path as real weights; benchmarks build ``full`` SD 1.5 architectures to time
real model passes without downloading anything. The tokenizer is a character-level CLIP BPE
(no merges) written locally.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch

from headgen.models.architectures import CLIP_L14_TEXT, SD15_UNET, SD_VAE

Size = Literal["tiny", "full"]


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's byte-level alphabet: printable bytes map to themselves, the rest above 255.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_char_tokenizer(folder: Path) -> None:
    """A CLIPTokenizer vocabulary of single characters (+ end-of-word forms) and no merges."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                    "unk_token": "<|endoftext|>"})
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 77, "tokenizer_class": "CLIPTokenizer", "do_lower_case": True})
    )


def _text_config(size: Size):
    from transformers import CLIPTextConfig

    if size == "full":  # SD 1.5's text encoder (CLIP ViT-L/14's text tower)
        return CLIPTextConfig(**CLIP_L14_TEXT)
    # Token ids of the character tokenizer written by write_char_tokenizer (<|startoftext|>, <|endoftext|>).
    return CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                          max_position_embeddings=77, vocab_size=2 * 256 + 2, projection_dim=16,
                          bos_token_id=512, eos_token_id=513, pad_token_id=513)


def build_unet(size: Size, in_channels: int = 4):
    from diffusers import UNet2DConditionModel

    if size == "full":  # SD 1.5
        return UNet2DConditionModel(**{**SD15_UNET, "in_channels": in_channels})
    return UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
    )


def build_vae(size: Size):
    from diffusers import AutoencoderKL

    blocks = 4  # SD's 8x down-sampling factor needs four blocks (three down-samplings)
    if size == "full":
        return AutoencoderKL(**SD_VAE)
    return AutoencoderKL(
        block_out_channels=(4, 4, 4, 4), down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks, latent_channels=4, layers_per_block=1, norm_num_groups=2,
        sample_size=64,
    )


def build_controlnet(unet):
    """A ControlNet copied from ``unet`` whose zero-initialised output convolutions get small random
    weights, so that (unlike a freshly initialised one) it changes the UNet's prediction."""
    from diffusers import ControlNetModel

    if unet.config.block_out_channels[0] >= 320:
        net = ControlNetModel.from_unet(unet)
    else:
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 8))
    with torch.no_grad():
        for module in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
            for p in module.parameters():
                p.normal_(0.0, 0.05)
    return net


def save_random_sd(folder: str | Path, size: Size = "tiny", seed: int = 0, controlnet: bool = True) -> Path:
    """Write a Stable-Diffusion-layout folder (unet, vae, text_encoder, tokenizer, scheduler) and,
    when ``controlnet``, a ControlNet folder beside it (``<folder>-controlnet``)."""
    from diffusers import DDPMScheduler
    from transformers import CLIPTextModel

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = build_unet(size)
    unet.save_pretrained(folder / "unet")
    build_vae(size).save_pretrained(folder / "vae")
    CLIPTextModel(_text_config(size)).save_pretrained(folder / "text_encoder")
    write_char_tokenizer(folder / "tokenizer")
    DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                  clip_sample=False, steps_offset=1).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    if controlnet:
        build_controlnet(unet).save_pretrained(folder.with_name(folder.name + "-controlnet"))
    return folder


def save_random_clip(folder: str | Path, seed: int = 0) -> Path:
    """A tiny CLIP (text + vision towers, projection) with tokenizer and image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig

    folder = Path(folder)
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)
    config = CLIPConfig(text_config=_text_config("tiny").to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    write_char_tokenizer(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
