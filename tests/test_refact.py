import numpy as np
import pytest
import torch

from editpersist.editors.base import apply_delta
from editpersist.tasks.requests import EditRequest
from editpersist.editors.refact import (
    ReFACT,
    ReFACTConfig,
    capture_io,
    compute_and_cache_stats,
    compute_u,
    pooled,
    rank_one_update,
)
from editpersist.families import get_family
from editpersist.tokens import subject_last_index, tokenize
from editpersist.toy.world import WorldSpec, sample_captions

CORPUS = [s.caption for s in sample_captions(WorldSpec(), 200, np.random.default_rng(0))]


def test_rank_one_update_moves_only_the_key_direction():
    g = torch.Generator().manual_seed(0)
    W, k, v = torch.randn(5, 8, generator=g), torch.randn(8, generator=g), torch.randn(5, generator=g)
    A = torch.randn(8, 8, generator=g)
    C = A @ A.T + torch.eye(8)
    u = compute_u(C, k)
    W2 = rank_one_update(W, u, k, W @ k, v)
    torch.testing.assert_close(W2 @ k, v)
    # Inputs orthogonal to u are untouched.
    x = torch.randn(8, generator=g)
    x = x - (x @ u) * u
    torch.testing.assert_close(W2 @ x, W @ x)


def test_phrases_and_positions(tokenizer_dirs):
    from transformers import CLIPTokenizer, T5Tokenizer

    from editpersist.tokens import noun_phrase

    assert noun_phrase("a blue circle") == "blue circle"
    clip = CLIPTokenizer.from_pretrained(tokenizer_dirs["clip"])
    assert subject_last_index(clip, "a photo of a circle", "circle") == 5  # BOS a photo of a circle
    t5 = T5Tokenizer.from_pretrained(tokenizer_dirs["t5"])
    assert subject_last_index(t5, "a photo of a circle", "circle") == 4


# On the tiny random SDXL encoders the v* found for the templated prompts moves the bare prompt
# toward the destination but not past the source (its key differs from the templates' mean).
@pytest.mark.parametrize("name,crosses", [("sd", True), ("sdxl", False), ("flux", True)])
def test_refact_edit_hits_its_target(tiny_model_dirs, tmp_path, caplog, name, crosses):
    family = get_family(name)
    pipe = family.load(tiny_model_dirs[name])
    # Layer 0: the output of the last layer at the subject cannot reach the EOS-pooled state.
    compute_and_cache_stats(pipe, get_family(name).refact_sites(0), CORPUS, tmp_path)
    cfg = ReFACTConfig(layer=0, templates=("{}", "a photo of {}", "a drawing of {}"), max_steps=100)
    delta = ReFACT(cfg, tmp_path).edit(pipe, family, [EditRequest("a circle", "a blue circle")])
    sites = get_family(name).refact_sites(0)
    assert sorted(delta.tensors) == sorted(f"{s.component}.{s.module}.weight" for s in sites)
    for info in delta.sidecar["optimisation"]:
        assert info["delta_norm"] <= 4 * info["v0_norm"] + 1e-4
        assert info["converged"] == (info["dest_prob"] > cfg.stop_prob)
    # A v* that never made the destination preferred is applied (as in ROME) but said in the log.
    unconverged = [i for i in delta.sidecar["optimisation"] if not i["converged"]]
    assert len([r for r in caplog.records if "did not converge" in r.getMessage()]) == len(unconverged)
    # After applying, each layer's output at the subject of the bare prompt is v*: the edited
    # prompt now embeds closer to the destination than before, in every edited encoder.
    refs, outs = [], []
    for site in sites:
        encoder, tok = getattr(pipe, site.component), getattr(pipe, site.tokenizer)
        module = encoder.get_submodule(site.module)
        # The objective's reference texts are embedded by the unedited encoder.
        refs.append((embed(encoder, tok, site, ["a blue circle"])[0], embed(encoder, tok, site, ["a circle"])[0]))
        outs.append(capture_io(encoder, module, tokenize(tok, ["a circle"]))[1])
    apply_delta(pipe, delta)
    for site, (e_dest, e_src), before_out in zip(sites, refs, outs):
        encoder, tok = getattr(pipe, site.component), getattr(pipe, site.tokenizer)
        after_out = capture_io(encoder, encoder.get_submodule(site.module), tokenize(tok, ["a circle"]))[1]
        pos = subject_last_index(tok, "a circle", "circle")
        assert not torch.allclose(before_out[0, pos], after_out[0, pos])
        e = embed(encoder, tok, site, ["a circle"])[0]
        assert e @ e_dest - e @ e_src > e_src @ e_dest - 1.0, site.component  # nearer the destination
        if crosses:
            assert e @ e_dest > e @ e_src, site.component  # reads as the destination


def embed(encoder, tok, site, prompts):
    with torch.no_grad():
        return torch.nn.functional.normalize(pooled(encoder, tokenize(tok, prompts), site.pooling), dim=-1)


def test_flux_clip_layer_also_edits_the_pooled_clip_encoder(tiny_model_dirs, tmp_path):
    from editpersist.editors.refact import refact_config

    family = get_family("flux")
    pipe = family.load(tiny_model_dirs["flux"])
    cfg = refact_config({"layers": {"flux": 0, "flux_clip": 1}, "templates": ["{}", "a photo of {}"], "max_steps": 5},
                        family, "appearance")
    sites = cfg.sites(family)
    assert [s.component for s in sites] == ["text_encoder_2", "text_encoder"]
    assert sites[1].module == "encoder.layers.1.mlp.fc2"
    # Only FLUX reads the key; the other families ignore it.
    sd = get_family("sd")
    assert refact_config({"layers": {"sd": 0, "flux_clip": 1}, "templates": ["{}"]}, sd, "role").sites(sd) == \
        sd.refact_sites(0)
    stats = compute_and_cache_stats(pipe, sites, CORPUS, tmp_path)
    assert len(stats) == 2 and all(p.is_file() for p in stats)
    delta = ReFACT(cfg, tmp_path).edit(pipe, family, [EditRequest("a circle", "a blue circle")])
    assert sorted(delta.tensors) == sorted(f"{s.component}.{s.module}.weight" for s in sites)
    assert [i["site"] for i in delta.sidecar["optimisation"]] == ["text_encoder_2", "text_encoder"]


@pytest.mark.parametrize("name", ["sd", "flux"])
def test_refact_reads_the_text_states_generation_sees(tiny_model_dirs, name):
    """ReFACT's encoder runs (statistics, keys, v*) equal the pipeline's own prompt encoding:
    FLUX runs T5 without an attention mask, so a masked run would edit other states."""
    from editpersist.editors.refact import _run
    from editpersist.editors.text_inputs import encode_for_edit

    family = get_family(name)
    pipe = family.load(tiny_model_dirs[name])
    prompts = ["a circle", "a photo of a blue square"]
    site = get_family(name).refact_sites(0)[0]
    encoder, tok = getattr(pipe, site.component), getattr(pipe, site.tokenizer)
    with torch.no_grad():
        ours = _run(encoder, tokenize(tok, prompts)).last_hidden_state
    generation = encode_for_edit(pipe, family, prompts)["t5_tokens" if name == "flux" else "tokens"].states
    torch.testing.assert_close(ours, generation)


def test_ridge_and_the_condition_numbers_the_sidecar_reports():
    from editpersist.editors.refact import condition_numbers, ridge_of, with_ridge

    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 3, generator=g, dtype=torch.float64)
    C = A @ A.T + 1e-6 * torch.eye(6, dtype=torch.float64)  # rank 3 plus a little: badly conditioned
    eig = torch.linalg.eigvalsh(C)
    report = condition_numbers(torch.stack([eig[0], eig[-1]]), ridge_of(C, 0.1))
    assert report["C_condition"] == pytest.approx(float(torch.linalg.cond(C)), rel=1e-6)
    ridged = with_ridge(C, 0.1)
    torch.testing.assert_close(ridged, C + 0.1 * C.diagonal().mean() * torch.eye(6, dtype=torch.float64))
    assert report["C_condition_with_ridge"] == pytest.approx(float(torch.linalg.cond(ridged)), rel=1e-6)
    assert report["C_condition_with_ridge"] < report["C_condition"] / 1e3
    torch.testing.assert_close(with_ridge(C, 0.0), C)
