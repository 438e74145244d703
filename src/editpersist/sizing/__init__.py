"""Sizing the published grid at real shapes with no weights and no GPU.

The engine (measures one unit of GPU work):

architectures   the published configurations (architectures/<arch>/<component>.json,
                sources in architectures/SOURCES.md) of 'sd14', 'sdxl', 'flux-schnell' and the
                judge 'ViT-bigG-14'.
    components(arch) -> tuple[str, ...]; denoiser_of(arch) -> str
    load_config(arch, component) -> dict          (component 'scheduler' too)
    build(arch, component, dtype='fp32', device='meta') -> nn.Module
    parameter_count(arch, component) -> int; parameter_bytes(arch, component, dtype) -> int
    PUBLISHED_PARAMETERS: {(arch, component): Published(figure, source)}

workloads       frozen, hashable records (dtype: 'fp32' | 'bf16' | 'fp16'):
    DenoiseStep(arch, batch, height, width, cfg, dtype)
    VaeDecode(arch, batch, height, width, dtype); VaeEncode(arch, batch, height, width, dtype)
    TextEncode(arch, encoder, batch, dtype)
    TrainStep(arch, method, batch, height, width, dtype, gradient_checkpointing,
              optimizer='adamw', rank=4, prior_preservation=False, autocast='bf16')
    RefactStep(arch, encoder, n_prompts, dtype, layer=None)
    LayerStats(arch, encoder, layer, batch, dtype)
    JudgeImages(batch, dtype); JudgeTexts(batch, dtype)
    ClosedFormSolve(arch, family=None, n_edit=77, n_preserve=7700)

footprint       (re-exports the workloads and the architecture helpers)
    footprint(workload) -> Footprint(peak_bytes: dict[str, int], flops: float,
                                     parameter_bytes: int, trace_s: float)
        peak_bytes by 'parameters', 'gradients', 'optimizer', 'activations', 'other'
    FootprintCache(path=None): __call__(workload) -> Footprint; prefetch(workloads);
        missing(workloads); save()
    trainable_parameters(step) -> int; trainable_bytes(step) -> int
    judge_bytes(dtype) -> int; refact_encoders(arch, flux_clip=False) -> tuple[str, ...]
    text_tokens(arch, encoder) -> int
    closed_form_cost(d, n_edit, n_preserve, layer_shapes, weight_itemsize, itemsize=4)
        -> (peak bytes by category, flops)

trace           the measurement itself (fake tensors, MemTracker, FlopCounterMode).

The plan (jobs, resources, calibration) is built on these in plan.py and its neighbours.
"""
