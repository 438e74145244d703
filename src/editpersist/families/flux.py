"""FLUX.1: CLIP (pooled vector only) + T5 (token sequence), an MMDiT transformer.

The text reaches the transformer through two linear maps, so those are what
UCE edits: `context_embedder` (T5 tokens) and the first layer of the pooled
text embedder (CLIP). Both carry a bias, which the editors must treat as fixed.
"""

from dataclasses import dataclass

import torch

from .base import ModelFamily, ReferenceCosts, TextSite
from .sdxl import FAMILY as SDXL
from .tiny import TEXT_WIDTH, tiny_clip, tiny_vae


@dataclass(frozen=True)
class FluxFamily(ModelFamily):
    @staticmethod
    def max_sequence_length(pipe) -> int:
        return min(512, pipe.tokenizer_2.model_max_length)

    def encode_prompts(self, pipe, prompts: list[str]) -> dict[str, torch.Tensor]:
        t5, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, device=pipe.device,
                                           max_sequence_length=self.max_sequence_length(pipe))
        return {"prompt_embeds": t5, "pooled": pooled}

    def call_kwargs(self, pipe, guidance: float) -> dict:
        # FLUX.1 has no unconditional training branch on real checkpoints (schnell is
        # guidance-distilled); "true CFG" against an empty negative prompt is used only
        # when the config asks for guidance > 1, as for the toy FLUX trained with dropout.
        kw = {"max_sequence_length": self.max_sequence_length(pipe), "guidance_scale": 0.0}
        if guidance > 1:
            kw.update(true_cfg_scale=guidance, negative_prompt="")
        return kw

    def training_loss(self, pipe, latents: torch.Tensor, cond_of, generator: torch.Generator):
        """Rectified flow matching (editpersist.training.objectives)."""
        from ..training.objectives import FlowMatchingObjective

        obj, denoiser = FlowMatchingObjective(), self.denoiser_of(pipe)

        def loss(idx):
            cond = cond_of(idx)
            return obj.loss(denoiser, latents[idx], cond["prompt_embeds"], cond["pooled"], generator)

        return loss

    def refact_sites(self, layer: int, pooled_clip_layer: int | None = None) -> list[TextSite]:
        """T5 at `layer`; FLUX's CLIP encoder, which only feeds the pooled vector, at
        `pooled_clip_layer` when given."""
        t5 = f"encoder.block.{layer}"
        sites = [TextSite("text_encoder_2", "tokenizer_2", t5, f"{t5}.layer.1.DenseReluDense.wo", "mean")]
        if pooled_clip_layer is not None:
            sites += super().refact_sites(pooled_clip_layer)
        return sites

    def pooled_clip_layer(self, layers: dict) -> int | None:
        """`layers.flux_clip` of a ReFACT config."""
        return layers.get("flux_clip")

    def published_scheduler(self):
        """FLUX.1-schnell's scheduler_config.json."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)

    def tiny_pipeline(self, tokenizers: dict, scheduler):
        from diffusers import FluxPipeline

        from ..toy.diffusion import build_flux_transformer, build_t5

        tok, t5_tok = tokenizers["tokenizer"], tokenizers["tokenizer_2"]
        t5 = build_t5(len(t5_tok), width=TEXT_WIDTH)
        transformer = build_flux_transformer(16, t5_dim=TEXT_WIDTH, pooled_dim=TEXT_WIDTH, width=64, double_layers=1,
                                             single_layers=1)
        return FluxPipeline(scheduler=scheduler, vae=tiny_vae(16, shift_factor=0.1), text_encoder=tiny_clip(tok),
                            tokenizer=tok, text_encoder_2=t5, tokenizer_2=t5_tok, transformer=transformer)


FAMILY = FluxFamily(
    name="flux",
    pipeline_class="FluxPipeline",
    denoiser="transformer",
    text_encoders=("text_encoder", "text_encoder_2"),
    tokenizers=("tokenizer", "tokenizer_2"),
    tokenizer_kinds=("clip", "t5"),
    uce_targets=(
        ("t5_tokens", "transformer", r"context_embedder"),
        ("clip_pooled", "transformer", r"time_text_embed\.text_embedder\.linear_1"),
    ),
    edit_inputs=(("t5_tokens", "prompt_embeds", "tokenizer_2"), ("clip_pooled", "pooled", None)),
    lora_targets=(
        "to_q", "to_k", "to_v", "to_out.0",
        "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
        "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
    ),
    gpu_precision="bf16",
    # No published FLUX.1 timing at hand. Assumed: SDXL's step scaled by transformer/UNet
    # parameters (11.9 B / 2.57 B) at the same 1024x1024, halved for schnell (no CFG branch);
    # load time assumed; FLUX.1-schnell's repo with its T5-XXL in bf16 (~33.7 GB).
    costs=ReferenceCosts(a100_step_s=SDXL.costs.a100_step_s * (11.9 / 2.57) / 2, native_resolution=1024,
                         load_s=60.0, checkpoint_bytes=33.7e9),
)
