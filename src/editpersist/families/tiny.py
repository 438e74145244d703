"""Parts of the random miniature pipelines (the rehearsal's models and the tests'): the
real architectures at widths that build, fine-tune and sample in seconds on a CPU."""

from __future__ import annotations

TEXT_WIDTH = 32


def tiny_vae(latent_channels: int, shift_factor: float | None = None):
    from diffusers import AutoencoderKL

    return AutoencoderKL(shift_factor=shift_factor, block_out_channels=(8, 16),
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         latent_channels=latent_channels, norm_num_groups=8, sample_size=32)


def tiny_clip(tok, width: int = TEXT_WIDTH, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=tok.model_max_length, projection_dim=width,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)
