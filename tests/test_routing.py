"""Subject routing (toy/routing.py): the gap it trains on, the pairs it trains with, and that
training closes the gap while keeping the encoder's states."""

import copy

import numpy as np
import pytest
import torch
from transformers import CLIPTokenizer, T5Tokenizer

from editpersist.evaluation.subject_probe import subject_state
from editpersist.hooks import transplanted
from editpersist.families.tiny import tiny_clip
from editpersist.tokens import noun_phrase, subject_last_index, tokenize
from editpersist.toy import routing
from editpersist.toy.diffusion import attribute_positions, t5_ids
from editpersist.toy.world import WorldSpec


@pytest.fixture(scope="module")
def clip_tok(tokenizer_dirs):
    return CLIPTokenizer.from_pretrained(tokenizer_dirs["clip"])


def _encoder(tok, seed):
    torch.manual_seed(seed)
    return tiny_clip(tok).eval()


def test_aligned_positions_skip_only_the_destinations_colour_word():
    # "<bos> a circle <eos> ..." against "<bos> a blue circle <eos> ...", 8 positions.
    src, dst = routing.aligned_positions(2, 3, 8)
    assert src == [0, 1, 2, 3, 4, 5, 6]
    assert dst == [0, 1, 3, 4, 5, 6, 7]
    # Two nouns of one token each: every position pairs with itself.
    assert routing.aligned_positions(2, 2, 6) == (list(range(6)), list(range(6)))


@pytest.mark.parametrize("layer", [0, 1])
def test_routing_gap_is_the_probes_transplant_against_the_destinations_states(clip_tok, layer):
    encoder = _encoder(clip_tok, 0)
    blocks = encoder.encoder.layers
    pairs = [("a circle", "a blue circle"), ("a photo of a king", "a photo of a triangle")]
    expected = []
    for source, destination in pairs:
        state = subject_state(encoder, clip_tok, blocks[layer], destination, noun_phrase(destination))
        position = subject_last_index(clip_tok, source, noun_phrase(source))
        with torch.no_grad():
            target = encoder(tokenize(clip_tok, [destination]).input_ids).last_hidden_state[0]
            with transplanted(blocks[layer], position, state):
                got = encoder(tokenize(clip_tok, [source]).input_ids).last_hidden_state[0]
        d = subject_last_index(clip_tok, destination, noun_phrase(destination))
        # By hand: the prefix pairs with itself, then the subject and what follows it.
        keep = [i for i in range(len(target)) if i < position or i >= d]
        src = [i if i < position else i - (d - position) for i in keep]
        expected.append(((got[src] - target[keep]) ** 2).mean())
    with torch.no_grad():
        gap = routing.routing_gap(encoder, clip_tok, blocks, [s for s, _ in pairs], [d for _, d in pairs],
                                  layer)
    torch.testing.assert_close(gap, torch.stack(expected).mean())


def test_phrase_pairs_share_a_template_and_never_aim_at_a_held_out_pair():
    spec = WorldSpec()
    rng = np.random.default_rng(0)
    pairs = [routing.phrase_pair(spec, rng) for _ in range(3000)]
    held = {f"{c} {s}" for c, s in spec.held_out_pairs}
    assert not [d for _, d in pairs if any(d.endswith(h) for h in held)]
    # Same template: the destination is the source with its noun phrase replaced.
    assert all(d.startswith(s.rsplit(" ", 1)[0] + " ") for s, d in pairs)
    recoloured = sum(s != d and s.split()[-1] == d.split()[-1] for s, d in pairs)
    renamed = sum(s.split()[-1] != d.split()[-1] for s, d in pairs)
    assert recoloured > 500 and renamed > 500


def test_routing_closes_the_gap_and_keeps_the_encoders_states(clip_tok):
    encoder = _encoder(clip_tok, 0)
    reference = copy.deepcopy(encoder)
    blocks = encoder.encoder.layers
    spec = WorldSpec()
    before = routing.routing_gaps(encoder, clip_tok, blocks, spec, n=64)
    routing.route_encoder(encoder, clip_tok, blocks, spec, routing.RoutingConfig(steps=60, batch=16, lr=1e-3, weight=3.0))
    after = routing.routing_gaps(encoder, clip_tok, blocks, spec, n=64)
    # A random tiny CLIP: 0.048 / 0.051 before, 0.013 / 0.016 after (layers 0 / 1).
    assert all(a < 0.5 * b for a, b in zip(after, before)), (before, after)
    ids = tokenize(clip_tok, ["a red circle", "a photo of a king", ""]).input_ids
    with torch.no_grad():
        drift = ((encoder(ids).last_hidden_state - reference(ids).last_hidden_state) ** 2).mean()
        scale = (reference(ids).last_hidden_state ** 2).mean()
    assert drift < 0.1 * scale


def test_attribute_positions_mark_the_colour_words_tokens(tokenizer_dirs):
    tok = T5Tokenizer.from_pretrained(tokenizer_dirs["t5"])
    ids = t5_ids(tok, ["a blue circle", "a photo of a red king", "a circle"], 12)
    mask = attribute_positions(tok, ids)
    words = [tok.convert_ids_to_tokens(row) for row in ids.tolist()]
    assert [[w for w, m in zip(row, marks) if m] for row, marks in zip(words, mask.tolist())] == \
        [["▁blue"], ["▁red"], []]
