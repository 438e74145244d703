import numpy as np
import pytest
import torch

from editpersist.families import get_family
from editpersist.finetuners.adapters import save_adapter
from editpersist.finetuners.config import FinetuneConfig
from editpersist.finetuners.core import ImageSet, finetune
from editpersist.sampling import SamplingConfig, generate
from editpersist.toy.render import render_samples
from editpersist.toy.world import Sample

SUBJECT = [Sample("a sks square", "purple", "square")] * 8


def _data():
    return ImageSet(render_samples(SUBJECT, seed=0), [s.caption for s in SUBJECT])


def _gen(pipe, family):
    return generate(pipe, family, ["a sks square"], 2, SamplingConfig(steps=3, guidance=2.0), base_seed=1)[0]


def _latents_out(pipe, family):
    """Denoiser output on fixed inputs: compares weights more finely than uint8 images."""
    torch.manual_seed(0)
    den = family.denoiser_of(pipe)
    with torch.no_grad():
        if family.name == "flux":
            from editpersist.training.objectives import flux_image_ids, pack_flux_latents

            x = pack_flux_latents(torch.randn(1, 16, 8, 8))
            return den(hidden_states=x, timestep=torch.tensor([0.5]), pooled_projections=torch.randn(1, 32),
                       encoder_hidden_states=torch.randn(1, 12, 32), txt_ids=torch.zeros(12, 3),
                       img_ids=flux_image_ids(8, 8, "cpu", torch.float32), return_dict=False)[0]
        return den(torch.randn(1, 4, 8, 8), torch.tensor([500]), encoder_hidden_states=torch.randn(1, 16, 32)).sample


@pytest.mark.parametrize("name", ["sd", "flux"])
@pytest.mark.parametrize("method", ["lora", "dora"])
def test_adapter_reloads_in_a_fresh_pipeline_and_fuses(tiny_model_dirs, tmp_path, name, method):
    family = get_family(name)
    pipe = family.load(tiny_model_dirs[name])
    res = finetune(pipe, family, _data(), FinetuneConfig(method, steps=3, lr=1e-2, batch=2))
    assert len(res.losses) == 3
    ref = _latents_out(pipe, family)
    save_adapter(pipe, family, tmp_path / "adapter")
    assert (tmp_path / "adapter/pytorch_lora_weights.safetensors").is_file()
    fresh = family.load(tiny_model_dirs[name])
    base = _latents_out(fresh, family)
    fresh.load_lora_weights(tmp_path / "adapter")
    reloaded = _latents_out(fresh, family)
    assert (ref - base).abs().max() > 1e-4  # the adapter does something
    torch.testing.assert_close(reloaded, ref, atol=1e-5, rtol=0)
    fresh.fuse_lora()
    torch.testing.assert_close(_latents_out(fresh, family), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["lora", "dora", "full"])
def test_sdxl_finetunes_and_its_adapters_reload(tiny_model_dirs, tmp_path, method):
    """SDXL's UNet also reads the pooled CLIP-G embedding and the size/crop time ids."""
    family = get_family("sdxl")
    pipe = family.load(tiny_model_dirs["sdxl"])
    before = _gen(pipe, family)
    res = finetune(pipe, family, _data(), FinetuneConfig(method, steps=3, lr=1e-2, batch=2))
    assert len(res.losses) == 3 and all(np.isfinite(res.losses))
    after = _gen(pipe, family)
    assert np.abs(after.astype(int) - before).max() > 0
    if method == "full":
        return
    save_adapter(pipe, family, tmp_path / "adapter")
    fresh = family.load(tiny_model_dirs["sdxl"])
    fresh.load_lora_weights(tmp_path / "adapter")
    np.testing.assert_array_equal(_gen(fresh, family), after)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_finetuning_is_deterministic_on_cpu(tiny_model_dirs, method):
    family = get_family("sd")
    runs = []
    for _ in range(2):
        pipe = family.load(tiny_model_dirs["sd"])
        res = finetune(pipe, family, _data(), FinetuneConfig(method, steps=3, lr=1e-3, batch=2, seed=5))
        runs.append((res.losses, _gen(pipe, family)))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_dreambooth_needs_and_uses_class_images(tiny_model_dirs):
    """Prior preservation trains on the class images, weighted by prior_weight: other class images
    give other weights; at prior_weight 0 the class images no longer matter."""
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    with pytest.raises(ValueError, match="class images"):
        finetune(pipe, family, _data(), FinetuneConfig("dreambooth", steps=1, lr=1e-5))
    green, blue = (ImageSet(render_samples([Sample("a square", c, "square")] * 4, seed=1), ["a square"] * 4)
                   for c in ("green", "blue"))

    def tuned(prior, weight):
        pipe = family.load(tiny_model_dirs["sd"])
        cfg = FinetuneConfig("dreambooth", steps=2, lr=1e-3, batch=2, snapshots=(0.5, 1.0), prior_weight=weight)
        res = finetune(pipe, family, _data(), cfg, prior=prior)
        return res, _latents_out(pipe, family)

    (res, green_out), (_, blue_out) = tuned(green, 1.0), tuned(blue, 1.0)
    assert sorted(res.snapshots) == [1, 2]
    assert not torch.allclose(green_out, blue_out)
    torch.testing.assert_close(tuned(green, 0.0)[1], tuned(blue, 0.0)[1], rtol=0, atol=0)


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown fine-tuning method 'qlora'"):
        FinetuneConfig("qlora", steps=1, lr=1e-4)


def test_benchmark_reports_step_time_and_memory(tiny_model_dirs):
    from editpersist.bench.runs import _one, table

    r = _one(str(tiny_model_dirs["sd"]), "sd", "dora", steps=2, warmup=1, batch=2)
    assert r["step_ms"] > 0 and r["peak_rss_mb"] > 0 and r["trainable_params"] > 0
    assert "| toy-sd/dora |" in table({"toy-sd/dora": r})


def _text_out(pipe, family):
    from editpersist.finetuners.core import encode_captions

    with torch.no_grad():
        cond = encode_captions(pipe, family, ["a sks square"])
    return cond["pooled"] if family.name == "flux" else cond["prompt_embeds"]


@pytest.mark.parametrize("name", ["sd", "flux"])
def test_text_encoder_adapter_trains_saves_and_fuses(tiny_model_dirs, tmp_path, name):
    from editpersist.states import load_adapter_fused

    family = get_family(name)
    pipe = family.load(tiny_model_dirs[name])
    before = _text_out(pipe, family)
    cfg = FinetuneConfig("lora", steps=3, lr=5e-2, batch=2, train_text_encoder=True, snapshots=(0.5,))
    res = finetune(pipe, family, _data(), cfg)
    trained_text, trained_den = _text_out(pipe, family), _latents_out(pipe, family)
    assert (trained_text - before).abs().max() > 1e-4  # the text encoder adapter learned something
    assert any(k.startswith("text_encoder.") for k in res.snapshots[2])
    save_adapter(pipe, family, tmp_path / "adapter")
    from editpersist.io import load_tensors

    keys = load_tensors(tmp_path / "adapter/pytorch_lora_weights.safetensors")
    assert any(k.startswith("text_encoder.") for k in keys) and any(k.startswith(f"{family.denoiser}.") for k in keys)
    fresh = family.load(tiny_model_dirs[name])
    load_adapter_fused(fresh, family, tmp_path / "adapter/pytorch_lora_weights.safetensors")
    torch.testing.assert_close(_text_out(fresh, family), trained_text, atol=1e-5, rtol=0)
    torch.testing.assert_close(_latents_out(fresh, family), trained_den, atol=1e-5, rtol=0)


def test_text_encoder_training_is_only_for_adapters():
    with pytest.raises(ValueError, match="train_text_encoder is for lora/dora"):
        FinetuneConfig("full", steps=1, lr=1e-4, train_text_encoder=True)


def test_full_finetune_of_a_half_precision_pipeline_keeps_fp32_master_weights(tiny_model_dirs):
    """AdamW's per-step update at a small learning rate is below half a bf16 step of most weights:
    training bf16 weights in place would change almost none of them, while fp32 master weights
    accumulate the updates until they show in bf16. The denoiser returns to bf16 afterwards."""
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"], precision="bf16")
    denoiser = family.denoiser_of(pipe)
    before = {k: v.clone() for k, v in denoiser.state_dict().items()}
    cfg = FinetuneConfig("full", steps=20, lr=2e-5, batch=2, precision="bf16", seed=3)
    finetune(pipe, family, _data(), cfg)
    after = denoiser.state_dict()
    assert all(v.dtype == torch.bfloat16 for v in after.values() if v.is_floating_point())
    weights = [k for k, v in before.items() if v.ndim == 2 and v.numel() >= 256]
    changed = sum(int((after[k] != before[k]).sum()) for k in weights)
    total = sum(before[k].numel() for k in weights)
    # 20 steps of ~2e-5 move a weight by up to 4e-4, past half a bf16 step (2^-9 of its size) for
    # the smaller weights: about 28 % of them change; trained in bf16 in place, about 5 %.
    assert changed / total > 0.15


def test_training_images_are_encoded_in_bounded_batches(tiny_model_dirs, monkeypatch):
    """DreamBooth's 205 images of the published recipe in one VAE call would not fit a GPU at
    1024 px; the encode goes ENCODE_BATCH images at a time (what the sizing prices)."""
    from editpersist.finetuners import core

    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    sizes = []
    encode = pipe.vae.encode
    monkeypatch.setattr(pipe.vae, "encode", lambda x: sizes.append(len(x)) or encode(x))
    monkeypatch.setattr(core, "ENCODE_BATCH", 3)
    data = ImageSet(render_samples([Sample("a sks square", "purple", "square")] * 7, seed=0), ["a sks square"] * 7)
    finetune(pipe, family, data, FinetuneConfig("lora", steps=1, lr=1e-4, batch=1))
    assert sizes == [3, 3, 1]
