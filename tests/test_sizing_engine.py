"""The sizing engine: the published architectures as data, and one workload's peak GPU
memory and FLOPs measured at real shapes with no weights (editpersist.sizing)."""

from __future__ import annotations

import pytest

from editpersist.sizing import architectures as arch

# The counts the published configurations build to, digit for digit (SDXL's UNet and
# FLUX.1-schnell's transformer are published rounded: 2.6B and 12B).
EXACT = {("sdxl", "unet"): 2_567_463_684, ("flux-schnell", "transformer"): 11_891_178_560,
         ("flux-schnell", "vae"): 83_819_683}


@pytest.mark.parametrize("arch_name,component", [(a, c) for a, cs in arch.ARCHITECTURES.items() for c in cs])
def test_every_component_builds_to_its_published_parameter_count(arch_name, component):
    count = arch.parameter_count(arch_name, component)
    published = arch.PUBLISHED_PARAMETERS.get((arch_name, component))
    assert published is not None or (arch_name, component) in arch.UNPUBLISHED
    if published is not None:
        assert published.agrees(count), (arch_name, component, count, published.figure)
    if (arch_name, component) in EXACT:
        assert count == EXACT[(arch_name, component)]


def test_published_figures_are_read_at_their_printed_precision():
    assert arch.Published("2.6B", "").agrees(2_567_463_684)
    assert not arch.Published("2.6B", "").agrees(2_660_000_000)
    assert arch.Published("694.66M", "").agrees(694_659_840)
    assert not arch.Published("694.66M", "").agrees(694_650_000)
    assert arch.Published("859,520,964", "").agrees(859_520_964)
    assert not arch.Published("859,520,964", "").agrees(859_520_965)


def test_components_build_in_the_asked_dtype_with_no_memory():
    import torch

    unet = arch.build("sd14", "unet", "bf16")
    params = list(unet.parameters())
    assert {p.dtype for p in params} == {torch.bfloat16} and all(p.is_meta for p in params)
    assert arch.parameter_bytes("sd14", "unet", "fp16") == 2 * 859_520_964


def test_unknown_architecture_or_component_is_one_line_naming_it():
    from editpersist.errors import ConfigError

    with pytest.raises(ConfigError, match="'sd15'"):
        arch.components("sd15")
    with pytest.raises(ConfigError, match="'transformer'"):
        arch.build("sd14", "transformer")
    with pytest.raises(ConfigError, match="'int8'"):
        arch.torch_dtype("int8")


def test_shipped_scheduler_configs_are_the_families_published_schedulers():
    """The shipped scheduler files agree with what the families build as their published
    schedulers (two independent transcriptions of the same files)."""
    from editpersist.families import get_family

    for name, family in arch.ARCH_FAMILY.items():
        shipped = arch.load_config(name, "scheduler")
        built = dict(get_family(family).published_scheduler().config)
        for key, value in shipped.items():
            if not key.startswith("_") and key in built:
                assert built[key] == (tuple(value) if isinstance(value, list) else value), (name, key)


# --------------------------------------------------------------------- footprints ----

GIB = 2**30


def test_flops_of_linear_layers_are_2mnk_forward_and_twice_that_backward():
    """A stack of linear layers, counted under fake tensors: forward 2*m*n*k summed by hand,
    backward (input and weight gradients) twice that."""
    import torch

    from editpersist.sizing import trace

    m = 8
    with trace.fake_mode():
        net = torch.nn.Sequential(torch.nn.Linear(16, 32, bias=False), torch.nn.Linear(32, 64, bias=False),
                                  torch.nn.Linear(64, 8, bias=False))
        x = torch.randn(m, 16, requires_grad=True)
        _, forward = trace.measure(lambda: net(x), [net])
        _, both = trace.measure(lambda: net(x).sum().backward(), [net])
    hand = 2 * m * (16 * 32) + 2 * m * (32 * 64) + 2 * m * (64 * 8)
    assert hand == 49_152
    assert forward == hand
    assert both == 3 * hand


def test_judge_flops_match_open_clips_published_profile():
    """open_clip's docs/model_profile.csv (row ViT-bigG-14) gives 967.5 GFLOPs for one 224-px
    image through the image tower and 97.86 for one text through the text tower."""
    from editpersist.sizing import footprint as fp

    assert fp.footprint(fp.JudgeImages(1, "fp32")).flops / 1e9 == pytest.approx(967.5, abs=0.05)
    assert fp.footprint(fp.JudgeTexts(1, "fp32")).flops / 1e9 == pytest.approx(97.86, abs=0.005)


def test_inference_holds_the_published_weights_in_the_asked_dtype():
    from editpersist.sizing import footprint as fp

    f = fp.footprint(fp.DenoiseStep("sd14", 2, 512, 512, True, "fp16"))
    assert f.peak_bytes["parameters"] == f.parameter_bytes == 2 * 859_520_964
    assert f.peak_bytes["gradients"] == f.peak_bytes["optimizer"] == 0
    assert f.peak_bytes["activations"] > 0 and f.flops > 0


def test_uce_closed_form_against_a_hand_count():
    """d = 4, one edited row, two preserved rows, layers (3, 4), (3, 4), (5, 4) stored in 2 bytes.
    FLOPs: Gram products 4 * (1 + 2) * 16 = 192; LU 2/3 * 64 and triangular solves 2 * 64,
    together 170 2/3; W0 T 2 * 4 * (12 + 12 + 20) = 352. Bytes: the solve holds the key rows,
    (2 + 2) * 4, and six 4 x 4 matrices, in 4 bytes: 448; the apply holds the (3, 4) pair
    twice, 2 * 24, and T, 16, in 4 bytes, with all solved weights in 2 bytes: 256 + 88 = 344."""
    from editpersist.sizing.footprint import closed_form_cost

    peak, flops = closed_form_cost(4, 1, 2, [(3, 4), (3, 4), (5, 4)], weight_itemsize=2)
    assert flops == pytest.approx(192 + 170 + 2 / 3 + 352)
    assert peak == {"activations": 448}


def test_closed_form_products_are_the_solves_own():
    """The Gram products and W0 T of the closed form count what editors.closed_form runs
    (FlopCounterMode on its real functions: every product but the LU solve, which it skips)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from editpersist.editors.closed_form import apply_transform, shared_transform
    from editpersist.sizing.footprint import closed_form_cost

    d, n_e, n_p, shapes = 24, 3, 10, [(8, 24), (8, 24), (16, 24)]
    weights = {f"w{i}": torch.randn(*s) for i, s in enumerate(shapes)}
    with FlopCounterMode(display=False) as counter:
        T = shared_transform(torch.randn(n_e, d), torch.randn(n_e, d), torch.randn(n_p, d), 0.5, 1.0, 1.0)
        apply_transform(weights, T)
    _, flops = closed_form_cost(d, n_e, n_p, shapes, weight_itemsize=4)
    assert counter.get_total_flops() == pytest.approx(flops - (2 / 3 + 2) * d**3)


def test_workloads_refuse_bad_fields_with_one_line_naming_them():
    from editpersist.errors import ConfigError
    from editpersist.sizing import footprint as fp

    with pytest.raises(ConfigError, match="TrainStep.method: unknown method 'qlora'"):
        fp.TrainStep("sd14", "qlora", 1, 512, 512, "fp16", False)
    with pytest.raises(ConfigError, match="multiples of 16"):
        fp.DenoiseStep("sd14", 1, 500, 512, True, "fp16")
    with pytest.raises(ConfigError, match="'ViT-bigG-14' is not a diffusion architecture"):
        fp.VaeDecode("ViT-bigG-14", 1, 512, 512, "fp16")


def test_footprint_cache_reads_back_what_it_saved_without_tracing(tmp_path, monkeypatch):
    from editpersist.sizing import footprint as fp

    w = fp.ClosedFormSolve("sd14")
    cache = fp.FootprintCache(tmp_path / "footprints.json")
    first = cache(w)
    cache.save()
    monkeypatch.setattr(fp, "footprint", lambda workload: pytest.fail("traced again"))
    again = fp.FootprintCache(tmp_path / "footprints.json")
    assert again.missing([w]) == []
    assert again(w) == first
    monkeypatch.setattr(fp, "engine_key", lambda: "another engine")
    assert fp.FootprintCache(tmp_path / "footprints.json").missing([w]) == [w]


# A small UNet of SD's layout, registered as an architecture for the real-tensor comparison.
TINY_UNET = {"_class_name": "UNet2DConditionModel", "sample_size": 24, "in_channels": 4, "out_channels": 4,
             "block_out_channels": [32, 64], "layers_per_block": 1,
             "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 32,
             "attention_head_dim": 8, "norm_num_groups": 32}


@pytest.fixture
def tiny_sd(tmp_path, monkeypatch):
    import json

    root = tmp_path / "architectures"
    (root / "tiny-sd").mkdir(parents=True)
    (root / "tiny-sd" / "unet.json").write_text(json.dumps(TINY_UNET))
    (root / "tiny-sd" / "scheduler.json").write_text((arch.ARCH_DIR / "sd14" / "scheduler.json").read_text())
    monkeypatch.setattr(arch, "ARCH_DIR", root)
    monkeypatch.setitem(arch.ARCHITECTURES, "tiny-sd", {"unet": "unet"})
    monkeypatch.setitem(arch.ARCH_FAMILY, "tiny-sd", "sd")
    return "tiny-sd"


def real_training_peak(step) -> int:
    """Peak bytes of the same training on real CPU tensors through the project's own loop
    (training.loop.train_steps, two steps: the second is the steady state), measured from the
    CPU allocator's allocation and free events (torch.profiler with profile_memory), plus the
    weights allocated before. AdamW runs its foreach implementation, CUDA's default; autocast
    has CUDA's float32 rules, as in the fake measurement."""
    import functools

    import torch
    from torch.profiler import ProfilerActivity, profile

    from editpersist.finetuners.adapters import attach_adapter
    from editpersist.families import get_family
    from editpersist.sizing import footprint as fp, trace
    from editpersist.training.loop import train_steps

    torch.manual_seed(0)
    unet = arch.build(step.arch, "unet", step.dtype, device="cpu")
    if step.method == "full":
        params = list(unet.float().requires_grad_(True).parameters())
    else:
        params = attach_adapter(unet, get_family("sd").lora_targets, step.rank, None, dora=step.method == "dora")
    if step.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    loss_fn = fp._train_loss(step, unet)

    def loss(_):
        with torch.autocast("cpu", dtype=arch.torch_dtype(step.autocast)):
            return loss_fn(torch.arange(step.batch))

    before = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                  for t in [*unet.parameters(), *unet.buffers()]}.values())
    adamw = torch.optim.AdamW
    torch.optim.AdamW = functools.partial(adamw, foreach=True)
    try:
        with trace.cuda_float32_rules(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            train_steps(params, loss, 2, 1e-4, schedule="constant", desc="real")
    finally:
        torch.optim.AdamW = adamw
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return before + peak


@pytest.mark.parametrize("method,checkpointing,res", [("full", True, 192), ("full", False, 192), ("lora", False, 128),
                                                     ("dora", False, 128)])
def test_fake_peak_agrees_with_the_same_step_on_real_tensors(tiny_sd, method, checkpointing, res):
    """Full fine-tune steps with AdamW (fp32 weights; with and without activation
    checkpointing), a LoRA and a DoRA step (bf16 base): MemTracker on fake tensors within 10 %
    of the allocator's real peak. Each peaks in the backward pass, where the steady state's optimiser
    states and the recomputed activations count."""
    from editpersist.sizing import footprint as fp

    step = fp.TrainStep(tiny_sd, method, 2, res, res, "fp32" if method == "full" else "bf16", checkpointing)
    fake = fp.footprint(step).peak_total
    real = real_training_peak(step)
    assert fake == pytest.approx(real, rel=0.10), (fake / GIB, real / GIB)


# Small denoisers with deep stacks of identical blocks, for the depth extrapolation.
TINY_FLUX = {"_class_name": "FluxTransformer2DModel", "attention_head_dim": 16, "axes_dims_rope": [4, 6, 6],
             "guidance_embeds": False, "in_channels": 16, "joint_attention_dim": 32, "num_attention_heads": 2,
             "num_layers": 3, "num_single_layers": 4, "patch_size": 1, "pooled_projection_dim": 32}
TINY_SDXL = {"_class_name": "UNet2DConditionModel", "sample_size": 16, "in_channels": 4, "out_channels": 4,
             "block_out_channels": [32, 64], "layers_per_block": 1, "down_block_types": ["DownBlock2D",
                                                                                      "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "cross_attention_dim": 64,
             "attention_head_dim": 8, "norm_num_groups": 32, "transformer_layers_per_block": [1, 4],
             "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
             "projection_class_embeddings_input_dim": 80, "use_linear_projection": True}


@pytest.fixture
def deep_tiny(tmp_path, monkeypatch):
    import json

    root = tmp_path / "architectures"
    for name, denoiser, cfg, like in (("tiny-flux", "transformer", TINY_FLUX, "flux-schnell"),
                                      ("tiny-sdxl", "unet", TINY_SDXL, "sdxl")):
        (root / name).mkdir(parents=True)
        (root / name / f"{denoiser}.json").write_text(json.dumps(cfg))
        (root / name / "scheduler.json").write_text((arch.ARCH_DIR / like / "scheduler.json").read_text())
        monkeypatch.setitem(arch.ARCHITECTURES, name, {denoiser: "flux_transformer" if name == "tiny-flux" else "unet"})
        monkeypatch.setitem(arch.ARCH_FAMILY, name, arch.ARCH_FAMILY[like])
    monkeypatch.setattr(arch, "ARCH_DIR", root)


@pytest.mark.parametrize("workload", [
    ("TrainStep", "tiny-flux", "lora", 1, 128, 128, "bf16", False),
    ("TrainStep", "tiny-flux", "dora", 1, 128, 128, "bf16", True),
    ("TrainStep", "tiny-sdxl", "lora", 1, 128, 128, "bf16", True),
    ("DenoiseStep", "tiny-sdxl", 2, 128, 128, True, "bf16")])
def test_depth_extrapolation_agrees_with_a_full_trace(deep_tiny, workload):
    """Traced with one block per stack and with two in one stack at a time, extrapolated to 3
    and 4 (FLUX's double and single stacks) or to 4 (the UNet's deepest transformer stacks):
    FLOPs and weights exactly; the peak from 1 % below to 5 % above a trace at full depth (with
    activation checkpointing the highest point of the backward pass moves a little with depth,
    and the extrapolation errs high), each category within 5 % of the peak."""
    from editpersist.sizing import footprint as fp

    w = getattr(fp, workload[0])(*workload[1:])
    assert fp.extrapolates(w)
    extrapolated, traced = fp.footprint(w), fp.full_trace(w)
    assert extrapolated.flops == pytest.approx(traced.flops, rel=1e-9)
    assert extrapolated.parameter_bytes == traced.parameter_bytes
    assert -0.01 <= extrapolated.peak_total / traced.peak_total - 1 <= 0.05, (extrapolated, traced)
    for category, nbytes in traced.peak_bytes.items():
        assert extrapolated.peak_bytes[category] == pytest.approx(nbytes, abs=0.05 * traced.peak_total), category


def test_full_fine_tunes_and_shallow_denoisers_are_traced_at_full_depth():
    from editpersist.sizing import footprint as fp

    assert not fp.extrapolates(fp.TrainStep("sdxl", "full", 1, 1024, 1024, "bf16", True))
    assert not fp.extrapolates(fp.TrainStep("sd14", "lora", 1, 512, 512, "fp16", False))
    assert fp.extrapolates(fp.TrainStep("flux-schnell", "lora", 1, 1024, 1024, "bf16", False))
    assert [(s.name, s.depth) for s in fp.depth_stacks("flux-schnell")] == [("double", 19), ("single", 38)]
    assert [(s.name, s.depth) for s in fp.depth_stacks("sdxl")] == [("deepest", 10)]
    assert fp.depth_stacks("sdxl")[0].overrides(2) == {"transformer_layers_per_block": [1, 2, 2]}


def test_extrapolation_takes_each_phase_at_full_depth_before_the_highest():
    """Phase by phase: a phase lower at one block (backward 8 < forward 10) but steeper (+2 a
    block against +1) is the peak at depth 11, 8 + 10 * 2 = 28, not forward's 10 + 10 = 20."""
    from editpersist.sizing import footprint as fp, trace

    one = ({"forward": {"activations": 10}, "backward": {"activations": 8}}, 100.0, 4)
    two = ({"forward": {"activations": 11}, "backward": {"activations": 10}}, 150.0, 6)
    phases, flops, params = fp._combine(one, [(10, two)])
    assert trace.highest(phases) == {"activations": 28}
    assert (flops, params) == (600.0, 24)


def test_tracking_leaves_no_dead_graph_in_a_reference_cycle():
    """A graph the backward pass never reaches (a module's output detached, as DoRA detaches
    B A) must be freed as soon as it is dropped, as it is without a tracker: the tracker's own
    hooks may not hold it in a reference cycle until Python's collector runs."""
    import gc

    import torch

    from editpersist.sizing import trace

    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        trace.measure(lambda: net(torch.eye(8)).detach(), [net])
        gc.collect()
        nodes = [o for o in gc.garbage if type(o).__name__.endswith("Backward0")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert nodes == []
