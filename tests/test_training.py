import pytest
import torch

from editpersist.errors import TrainingError
from editpersist.toy.diffusion import build_flux_transformer, build_sd_unet, sd_schedulers
from editpersist.training.loop import train_steps
from editpersist.training.objectives import (
    DenoisingObjective,
    FlowMatchingObjective,
    pack_flux_latents,
    unpack_flux_latents,
)


def test_pack_unpack_roundtrip():
    x = torch.randn(2, 16, 8, 8)
    assert pack_flux_latents(x).shape == (2, 16, 64)
    torch.testing.assert_close(unpack_flux_latents(pack_flux_latents(x), 8, 8), x)


def _sd_run(seed):
    torch.manual_seed(0)
    unet = build_sd_unet(4, 32, widths=(32, 64))
    obj = DenoisingObjective(sd_schedulers()[0])
    g = torch.Generator().manual_seed(seed)
    lat, emb = torch.randn(8, 4, 8, 8), torch.randn(8, 6, 32)
    return train_steps(unet.parameters(), lambda s: obj.loss(unet, lat, emb, g), 8, 1e-3, desc="t")


def test_sd_objective_trains_and_is_deterministic():
    a, b = _sd_run(1), _sd_run(1)
    assert a == b
    assert a[-1] < a[0]


def test_flow_matching_objective_trains():
    torch.manual_seed(0)
    tr = build_flux_transformer(16, t5_dim=32, pooled_dim=32, width=64, double_layers=1, single_layers=1)
    g = torch.Generator().manual_seed(0)
    lat, txt, pooled = torch.randn(8, 16, 8, 8), torch.randn(8, 5, 32), torch.randn(8, 32)
    obj = FlowMatchingObjective()
    losses = train_steps(tr.parameters(), lambda s: obj.loss(tr, lat, txt, pooled, g), 10, 1e-3, desc="f")
    assert min(losses[-3:]) < losses[0]


def test_non_finite_loss_stops_with_step_number():
    w = torch.nn.Parameter(torch.ones(1))

    def loss(step):
        return w.sum() * (float("nan") if step == 3 else 1.0)

    with pytest.raises(TrainingError, match="loss is nan at step 3"):
        train_steps([w], loss, 10, 1e-2, desc="nan-test")


def test_flux_pretraining_gives_the_empty_prompts_pooled_vector_at_the_drop_rate(tiny_model_dirs, monkeypatch):
    from editpersist.families import get_family
    from editpersist.toy import diffusion
    from editpersist.toy.world import Sample

    pipe = get_family("flux").load(tiny_model_dirs["flux"])
    samples = [Sample(f"a {c} {s}", c, s) for c, s in (("red", "circle"), ("blue", "square"), ("green", "cross"))]
    captions, _ = diffusion.caption_index(samples)
    _, pooled_of = diffusion.encode_prompts_clip(pipe.text_encoder, pipe.tokenizer, captions)
    seen = []

    def record(self, transformer, latents, prompt_embeds, pooled, generator):
        seen.append(pooled.detach().clone())
        return prompt_embeds.sum() * 0

    monkeypatch.setattr(diffusion.FlowMatchingObjective, "loss", record)

    def pooled_rows(p_drop: float) -> torch.Tensor:
        seen.clear()
        cfg = diffusion.PretrainConfig(steps=20, batch=8, lr=1e-4, p_uncond=0.0, p_drop_pooled=p_drop)
        diffusion.pretrain_flux(pipe.transformer, pipe.text_encoder_2, pipe.tokenizer_2, pipe.text_encoder,
                                pipe.tokenizer, torch.zeros(len(samples), 1), samples, cfg,
                                max_len=pipe.tokenizer_2.model_max_length)
        return torch.cat(seen)

    def share_empty(rows: torch.Tensor) -> float:
        return float(torch.isclose(rows, pooled_of[0]).all(dim=1).float().mean())

    # 160 rows each: captions' own vectors without dropout, the empty prompt's at about the rate.
    assert share_empty(pooled_rows(0.0)) == 0.0
    assert share_empty(pooled_rows(1.0)) == 1.0
    assert 0.35 < share_empty(pooled_rows(0.5)) < 0.65


@pytest.mark.parametrize("family_name,train_t5", [("sd", True), ("flux", True), ("flux", False)])
def test_pretraining_removes_the_colour_words_text_states_at_the_drop_rate(tiny_model_dirs, monkeypatch,
                                                                             family_name, train_t5):
    """Also toy FLUX's stage on a frozen T5, whose states are computed once: they must be the T5's."""
    from editpersist.families import get_family
    from editpersist.toy import diffusion
    from editpersist.toy.world import Sample

    pipe = get_family(family_name).load(tiny_model_dirs[family_name])
    samples = [Sample("a red circle", "red", "circle")]
    seen = []
    record = lambda self, model, latents, embeds, *rest, **kw: seen.append(embeds.detach()) or \
        next(model.parameters()).sum() * 0
    monkeypatch.setattr(diffusion.FlowMatchingObjective, "loss", record)
    monkeypatch.setattr(diffusion.DenoisingObjective, "loss", record)
    if family_name == "sd":
        original = diffusion.encode_prompts_clip(pipe.text_encoder, pipe.tokenizer, ["a red circle"])[0][0]
        colour = 2  # <bos> a red circle <eos> ...
    else:
        with torch.no_grad():
            original = pipe.text_encoder_2(diffusion.t5_ids(pipe.tokenizer_2, ["a red circle"],
                                                            pipe.tokenizer_2.model_max_length)).last_hidden_state[0]
        colour = 1  # ▁a ▁red ▁circle </s> ...
    # By hand: the colour's state gone, everything after it one place earlier, the last state twice.
    removed = torch.cat([original[:colour], original[colour + 1:], original[-1:]])

    def share_removed(p_drop: float) -> float:
        seen.clear()
        cfg = diffusion.PretrainConfig(steps=20, batch=8, lr=1e-4, p_uncond=0.0, p_drop_attribute=p_drop)
        if family_name == "sd":
            diffusion.pretrain_sd(pipe.unet, diffusion.sd_schedulers()[0], pipe.text_encoder, pipe.tokenizer,
                                  torch.zeros(1, 1), samples, cfg)
        else:
            diffusion.pretrain_flux(pipe.transformer, pipe.text_encoder_2, pipe.tokenizer_2, pipe.text_encoder,
                                    pipe.tokenizer, torch.zeros(1, 1), samples, cfg,
                                    max_len=pipe.tokenizer_2.model_max_length, train_t5=train_t5)
        rows = torch.cat(seen)
        is_removed = torch.isclose(rows, removed, atol=1e-6).flatten(1).all(1)
        is_original = torch.isclose(rows, original, atol=1e-6).flatten(1).all(1)
        assert (is_removed | is_original).all()
        return float(is_removed.float().mean())

    assert share_removed(0.0) == 0.0
    assert share_removed(1.0) == 1.0
    assert 0.35 < share_removed(0.5) < 0.65


@pytest.mark.parametrize("train_t5", [True, False])
def test_flux_pretraining_on_a_frozen_t5_trains_the_transformer_alone(tiny_model_dirs, train_t5):
    """The stage after the routing learns on the T5 the pipeline ships: T5's weights must come out
    bit-identical while the transformer moves; the joint stage moves both."""
    from editpersist.families import get_family
    from editpersist.toy import diffusion
    from editpersist.toy.world import Sample

    pipe = get_family("flux").load(tiny_model_dirs["flux"])
    samples = [Sample(f"a {c} {s}", c, s) for c, s in (("red", "circle"), ("blue", "square"))]
    latents = torch.randn(len(samples), pipe.transformer.config.in_channels // 4, 4, 4,
                          generator=torch.Generator().manual_seed(0))
    t5_before = {k: v.clone() for k, v in pipe.text_encoder_2.state_dict().items()}
    tr_before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    cfg = diffusion.PretrainConfig(steps=3, batch=4, lr=1e-3, p_drop_pooled=0.5, p_drop_attribute=0.5)
    losses = diffusion.pretrain_flux(pipe.transformer, pipe.text_encoder_2, pipe.tokenizer_2, pipe.text_encoder,
                                     pipe.tokenizer, latents, samples, cfg,
                                     max_len=pipe.tokenizer_2.model_max_length, train_t5=train_t5)
    t5_same = all(torch.equal(t5_before[k], v) for k, v in pipe.text_encoder_2.state_dict().items())
    tr_same = all(torch.equal(tr_before[k], v) for k, v in pipe.transformer.state_dict().items())
    assert len(losses) == 3 and not tr_same
    assert t5_same is not train_t5
