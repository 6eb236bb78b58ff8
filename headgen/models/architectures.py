"""The public models' architectures, as the values of their ``config.json`` files.

Shared by the full-size random stand-ins of ``--dry-run`` (:mod:`headgen.models.full_size`) and
the ``full`` size of :mod:`headgen.models.random_init` (benchmarks), so there is one copy of each.
"""

from __future__ import annotations

from typing import Any

# stable-diffusion-v1-5/stable-diffusion-v1-5, unet/config.json.
SD15_UNET: dict[str, Any] = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=8, cross_attention_dim=768, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, mid_block_scale_factor=1,
)
# stabilityai/stable-diffusion-2-1-base, unet/config.json: OpenCLIP-H's 1024-wide text states,
# per-block head dims, linear projections in the transformer blocks.
SD21_UNET: dict[str, Any] = {**SD15_UNET, "attention_head_dim": (5, 10, 20, 20), "cross_attention_dim": 1024,
                             "use_linear_projection": True}
# vae/config.json of both (scaling_factor 0.18215 is AutoencoderKL's default).
SD_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    act_fn="silu", sample_size=512, scaling_factor=0.18215,
)
# scheduler/scheduler_config.json of both (SD 2.1-base predicts epsilon, like SD 1.5).
SD_SCHEDULER: dict[str, Any] = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, clip_sample=False,
    steps_offset=1, prediction_type="epsilon",
)
_CHAR_TOKENS = dict(bos_token_id=512, eos_token_id=513, pad_token_id=513)
# SD 1.5 text_encoder/config.json = openai/clip-vit-large-patch14's text tower.
CLIP_L14_TEXT: dict[str, Any] = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, **_CHAR_TOKENS,
)
# SD 2.1-base text_encoder/config.json: OpenCLIP ViT-H/14's text tower (23 of its 24 layers, GELU).
OPENCLIP_H_TEXT: dict[str, Any] = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=512, **_CHAR_TOKENS,
)
# openai/clip-vit-large-patch14, config.json vision_config.
CLIP_L14_VISION: dict[str, Any] = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
    patch_size=14, hidden_act="quick_gelu", projection_dim=768,
)
# openai/clip-vit-base-patch32, config.json.
CLIP_B32_TEXT: dict[str, Any] = {**CLIP_L14_TEXT, "hidden_size": 512, "intermediate_size": 2048,
                                 "num_attention_heads": 8, "projection_dim": 512}
CLIP_B32_VISION: dict[str, Any] = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224,
    patch_size=32, hidden_act="quick_gelu", projection_dim=512,
)
# ControlNets: the UNet's encoder plus the conditioning embedding (16, 32, 96, 256 channels from a
# 3-channel 512 px image), as lllyasviel/control_v11e_sd15_ip2p and CrucibleAI/ControlNetMediaPipeFace
# (diffusion_sd15/ for SD 1.5, the repository root for SD 2.1-base).
UNET_ENCODER_KEYS = ("in_channels", "block_out_channels", "down_block_types", "layers_per_block",
                      "attention_head_dim", "cross_attention_dim", "norm_num_groups", "norm_eps", "act_fn",
                      "flip_sin_to_cos", "freq_shift", "downsample_padding", "use_linear_projection")
