"""The subject-token transplant behind the toy world's `subject_binding` figure."""

import pytest
import torch

from editpersist.tokens import subject_last_index, tokenize
from editpersist.evaluation.subject_probe import (
    layer_count,
    transplant_all,
    transplant_sites,
)
from editpersist.hooks import transplanted
from editpersist.families import get_family


def _block_output(encoder, block, ids) -> torch.Tensor:
    seen = {}
    handle = block.register_forward_hook(lambda m, a, o: seen.__setitem__("h", (o[0] if isinstance(o, tuple) else o)))
    try:
        with torch.no_grad():
            encoder(ids)
    finally:
        handle.remove()
    return seen["h"]


@pytest.mark.parametrize("name", ["sd", "sdxl", "flux"])
def test_transplant_replaces_exactly_the_subject_state(tiny_model_dirs, name):
    family = get_family(name)
    pipe = family.load(tiny_model_dirs[name])
    assert layer_count(pipe, family) >= 1
    sites = transplant_sites(pipe, family, "a king", "a triangle", 0)
    assert len(sites) == len(family.refact_sites(0))
    site = family.refact_sites(0)[0]
    encoder, tok = getattr(pipe, site.component), getattr(pipe, site.tokenizer)
    block, position, state = sites[0].block, sites[0].position, sites[0].state
    assert position == subject_last_index(tok, "a king", "king")
    # The transplanted state is the destination's subject state at that layer.
    dest_ids = tokenize(tok, ["a triangle"]).input_ids
    torch.testing.assert_close(state, _block_output(encoder, block, dest_ids)[0, subject_last_index(
        tok, "a triangle", "triangle")])
    ids = tokenize(tok, ["a king", "a photo of a king"]).input_ids
    before = _block_output(encoder, block, ids)
    with transplanted(block, position, state):
        during = _block_output(encoder, block, ids)
    after = _block_output(encoder, block, ids)
    torch.testing.assert_close(during[:, position], state.expand(2, -1))
    others = [i for i in range(ids.shape[1]) if i != position]
    torch.testing.assert_close(during[:, others], before[:, others])
    torch.testing.assert_close(after, before)  # the hook is gone


def test_transplant_reaches_the_encoder_output(tiny_model_dirs):
    """With the transplant after the last layer the prompt's final subject state is the destination's,
    which is what the pipeline's cross-attention reads at that position."""
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    last = layer_count(pipe, family) - 1
    sites = transplant_sites(pipe, family, "a king", "a triangle", last)
    with transplant_all(sites), torch.no_grad():
        out = pipe.text_encoder(tokenize(pipe.tokenizer, ["a king"]).input_ids).last_hidden_state
    ref = pipe.text_encoder(tokenize(pipe.tokenizer, ["a triangle"]).input_ids).last_hidden_state
    pos = sites[0].position
    torch.testing.assert_close(out[0, pos], ref[0, pos])


@pytest.mark.parametrize("name", ["sd", "sdxl", "flux"])
def test_transplant_leaves_the_negative_prompts_encoding_alone(tiny_model_dirs, name):
    """The pipelines encode the empty negative prompt through the same encoder; only the source
    prompt's rows get the destination's subject state, in a batch holding both."""
    family = get_family(name)
    pipe = family.load(tiny_model_dirs[name])
    for spec, site in zip(family.refact_sites(0), transplant_sites(pipe, family, "a king", "a triangle", 0)):
        tok = getattr(pipe, spec.tokenizer)
        ids = tokenize(tok, ["a king", "", "a photo of a king"]).input_ids
        before = _block_output(site.encoder, site.block, ids)
        with transplant_all([site]):
            during = _block_output(site.encoder, site.block, ids)
        torch.testing.assert_close(during[0, site.position], site.state)
        torch.testing.assert_close(during[1:], before[1:])
        others = [i for i in range(ids.shape[1]) if i != site.position]
        torch.testing.assert_close(during[0, others], before[0, others])
