import shutil

import numpy as np
import pytest
import torch

from editpersist.errors import ConfigError, InputError
from editpersist.families import FAMILIES, get_family
from editpersist.sampling import SamplingConfig, generate


# The pipeline call each family's generation must amount to, written out here by hand.
HAND_CALL = {"sd": {"guidance_scale": 2.0}, "sdxl": {"guidance_scale": 2.0},
             "flux": {"guidance_scale": 0.0, "true_cfg_scale": 2.0, "negative_prompt": ""}}


@pytest.mark.parametrize("name", ["sd", "sdxl", "flux"])
def test_generation_is_the_plain_pipeline_call_with_per_image_seeds(tiny_model_dirs, name):
    from editpersist.sampling import image_seed

    family = get_family(name)
    pipe = family.load(tiny_model_dirs[name], device="cpu")
    assert type(pipe).__name__ == family.pipeline_class
    assert family.denoiser_of(pipe).dtype == torch.float32  # fp32 policy on CPU
    images, jobs = generate(pipe, family, ["a red circle", "a blue square"], 2,
                            SamplingConfig(steps=2, guidance=2.0, height=32, width=32, batch=3), base_seed=7)
    assert [j[:2] for j in jobs] == [("a red circle", 0), ("a red circle", 1), ("a blue square", 0), ("a blue square", 1)]
    extra = {"max_sequence_length": pipe.tokenizer_2.model_max_length} if name == "flux" else {}
    for image, (prompt, index, seed) in zip(images, jobs):
        assert seed == image_seed(7, prompt, index)
        ref = pipe(prompt=[prompt], height=32, width=32, num_inference_steps=2, output_type="np",
                   generator=[torch.Generator().manual_seed(seed)], **HAND_CALL[name], **extra).images[0]
        # One image alone and in a batch of 3 run different BLAS kernels: one rounding step apart.
        diff = np.abs(image.astype(int) - (np.asarray(ref) * 255).round().astype(int))
        assert diff.max() <= 2, (prompt, index, diff.max())


def test_same_seed_same_image_regardless_of_batching(tiny_model_dirs):
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    a, _ = generate(pipe, family, ["a red circle", "a square"], 2, SamplingConfig(steps=2, batch=4))
    b, _ = generate(pipe, family, ["a red circle", "a square"], 2, SamplingConfig(steps=2, batch=1))
    c, _ = generate(pipe, family, ["a red circle", "a square"], 2, SamplingConfig(steps=2, batch=4))
    np.testing.assert_array_equal(a, c)  # same config, same bytes
    # A batch of 4 and a batch of 1 run different BLAS kernels (another summation order), so a
    # pixel may land one rounding step apart; the seeds, hence the images, are the same.
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())


@pytest.mark.parametrize("name,expected", [
    ("sd", {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v"}),
    ("flux", {"transformer.context_embedder", "transformer.time_text_embed.text_embedder.linear_1"}),
])
def test_uce_target_naming(tiny_model_dirs, name, expected):
    family = get_family(name)
    mods = family.uce_modules(family.load(tiny_model_dirs[name]))
    assert expected <= set(mods)
    if name == "sd":
        assert all(k.endswith(("attn2.to_k", "attn2.to_v")) for k in mods)
    else:
        assert set(mods) == expected


def test_sdxl_targets_read_both_text_encoders(tiny_model_dirs):
    family = get_family("sdxl")
    pipe = family.load(tiny_model_dirs["sdxl"])
    mods = family.uce_modules(pipe)
    # cross_attention_dim is the concatenation of both encoders' widths (32 + 32).
    assert mods and all(m.in_features == 64 for m in mods.values())


def test_sd14_shaped_unet_has_32_cross_attention_kv_matrices():
    """SD 1.4's real UNet config, instantiated on the meta device (no memory, no download)."""
    from diffusers import UNet2DConditionModel

    cfg = dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8,
    )
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)

    class Pipe:  # the family only needs the component attribute
        pass

    pipe = Pipe()
    pipe.unet = unet
    mods = get_family("sd").uce_modules(pipe)
    assert len(mods) == 32
    assert {m.in_features for m in mods.values()} == {768}


def test_unknown_family_names_the_key():
    with pytest.raises(ConfigError, match="family: unknown model family 'sd3'"):
        get_family("sd3")


def test_missing_model_dir_names_path(tmp_path):
    with pytest.raises(InputError, match=str(tmp_path / "nope")):
        get_family("sd").load(tmp_path / "nope")


def test_missing_component_names_it(tiny_model_dirs, tmp_path):
    broken = tmp_path / "sd"
    shutil.copytree(tiny_model_dirs["sd"], broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(InputError, match=r"unet.*missing component directory 'unet'"):
        get_family("sd").load(broken)


def test_wrong_pipeline_class_is_rejected(tiny_model_dirs):
    with pytest.raises(InputError, match="is not 'FluxPipeline'"):
        get_family("flux").load(tiny_model_dirs["sd"])


def test_corrupt_weights_name_the_file(tiny_model_dirs, tmp_path):
    broken = tmp_path / "sd"
    shutil.copytree(tiny_model_dirs["sd"], broken)
    weights = next((broken / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(Exception, match="safetensors|unet|header|deserializ"):
        get_family("sd").load(broken)


def test_families_registry_is_complete(tiny_model_dirs):
    """Every family names components its pipeline really has, and a denoiser among them."""
    assert set(FAMILIES) == {"sd", "sdxl", "flux"}
    for name, f in FAMILIES.items():
        pipe = f.load(tiny_model_dirs[name])
        assert set(f.components) <= set(pipe.components), name
        assert f.denoiser in f.components and f.denoiser_of(pipe) is getattr(pipe, f.denoiser)
