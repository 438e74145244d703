"""FLUX.1: CLIP (pooled vector only) + T5 (token sequence), an MMDiT transformer.

The text reaches the transformer through two linear maps, so those are what
UCE edits: `context_embedder` (T5 tokens) and the first layer of the pooled
text embedder (CLIP). Both carry a bias, which the editors must treat as fixed.
"""

from .base import ModelFamily

FAMILY = ModelFamily(
    name="flux",
    pipeline_class="FluxPipeline",
    denoiser="transformer",
    text_encoders=("text_encoder", "text_encoder_2"),
    tokenizers=("tokenizer", "tokenizer_2"),
    objective="flow_matching",
    uce_targets=(
        ("t5_tokens", "transformer", r"context_embedder"),
        ("clip_pooled", "transformer", r"time_text_embed\.text_embedder\.linear_1"),
    ),
    token_groups=(("t5_tokens", "tokenizer_2"),),
    lora_targets=(
        "to_q", "to_k", "to_v", "to_out.0",
        "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
        "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
    ),
    gpu_precision="bf16",
)
