"""Training the token rows no caption uses (toy/unseen_rows.py)."""

import numpy as np
import pytest
import torch

from editpersist.toy.diffusion import build_t5
from editpersist.toy.unseen_rows import (
    EncoderRows,
    UnseenRowsConfig,
    encoder_rows,
    insert_filler,
    train_unseen_rows,
    unseen_ids,
    with_fillers,
)

EOS, PAD = 1, 0


def test_unseen_ids_are_the_vocabulary_no_caption_uses_less_the_special_tokens():
    ids = torch.tensor([[5, 7, EOS, PAD], [7, 3, EOS, PAD]])
    assert unseen_ids(ids, vocab_size=9, special={EOS, PAD, 2}) == [4, 6, 8]


def test_a_filler_is_inserted_before_its_position_and_the_row_loses_padding_from_its_end():
    row = torch.tensor([49, 5, 6, 50, 0, 0, 0])
    assert insert_filler(row, [9, 8], at=2).tolist() == [49, 5, 9, 8, 6, 50, 0]
    assert insert_filler(row, [9], at=3).tolist() == [49, 5, 6, 9, 50, 0, 0]


def _rows(ids, unseen, first=0, embedding=None):
    return EncoderRows(embedding, torch.tensor(ids), unseen, EOS, first)


def test_fillers_fall_between_the_first_content_token_and_eos_and_keep_the_caption_in_order():
    bos = 40
    rows = _rows([[bos, 5, 6, EOS] + [PAD] * 6, [bos, 7, EOS] + [PAD] * 7], unseen=[20, 21, 22], first=1)
    rng = np.random.default_rng(0)
    for _ in range(50):
        out = with_fillers(rows, torch.tensor([0, 1]), rng, max_filler=3)
        for new, old in zip(out.tolist(), rows.ids.tolist()):
            at = [j for j, t in enumerate(new) if t in (20, 21, 22)]
            assert 1 <= len(at) <= 3 and at == list(range(at[0], at[0] + len(at)))  # one filler, in one piece
            assert 1 <= at[0] <= old.index(EOS)  # after BOS, at the latest just before EOS
            assert [t for t in new if t not in (20, 21, 22)] == old[:len(old) - len(at)]


def test_a_caption_with_no_room_for_its_filler_is_refused():
    rows = _rows([[5, 6, EOS, PAD]], unseen=[20])
    with pytest.raises(ValueError, match="no room"):
        with_fillers(rows, torch.tensor([0]), np.random.default_rng(0), max_filler=2)


def test_encoder_rows_of_the_toy_tokenizers_start_fillers_after_bos_and_train_the_identifier(tokenizer_dirs):
    from transformers import CLIPTokenizer, T5Tokenizer

    from editpersist.toy.diffusion import t5_ids
    from editpersist.tokens import tokenize

    captions = ["a red circle", "a photo of a blue square", ""]
    clip = CLIPTokenizer.from_pretrained(tokenizer_dirs["clip"])
    t5 = T5Tokenizer.from_pretrained(tokenizer_dirs["t5"])
    emb = torch.nn.Embedding(1, 1)
    for tok, ids, first in ((clip, tokenize(clip, captions).input_ids, 1), (t5, t5_ids(t5, captions, 12), 0)):
        rows = encoder_rows(emb, tok, ids)
        assert rows.first == first and rows.eos_id == tok.eos_token_id
        assert not set(rows.unseen) & (set(ids.flatten().tolist()) | set(tok.all_special_ids))
        assert tok("sks", add_special_tokens=False).input_ids[0] in rows.unseen
        assert len(rows.unseen) == len(tok) - len(set(ids.flatten().tolist()) | set(tok.all_special_ids))


def _tiny_world():
    torch.manual_seed(0)
    t5 = build_t5(32, width=16, layers=2).eval()
    captions = torch.tensor([[5, 6, EOS] + [PAD] * 5, [5, 7, EOS] + [PAD] * 5, [8, 6, EOS] + [PAD] * 5])
    readout = torch.nn.Linear(16, 4)
    t5.requires_grad_(False)
    readout.requires_grad_(False)

    def predict(idx, ids, noise_seed):
        noise = torch.randn(len(idx), 4, generator=torch.Generator().manual_seed(noise_seed))
        return readout(t5(ids[0]).last_hidden_state.mean(1)) + noise

    rows = EncoderRows(t5.get_input_embeddings(), captions, unseen_ids(captions, 32, {EOS, PAD, 2}), EOS, 0)
    return t5, rows, predict


def test_only_the_unseen_rows_move_and_every_caption_keeps_its_states_bit_for_bit():
    t5, rows, predict = _tiny_world()
    before = {k: v.clone() for k, v in t5.state_dict().items()}
    with torch.no_grad():
        states = t5(rows.ids).last_hidden_state.clone()
    train_unseen_rows([rows], predict, UnseenRowsConfig(steps=30, batch=8, lr=0.05, seed=1))
    after = t5.state_dict()
    emb = "shared.weight"
    seen = [i for i in range(32) if i not in rows.unseen]
    assert torch.equal(after[emb][seen], before[emb][seen])
    assert all(not torch.equal(after[emb][i], before[emb][i]) for i in rows.unseen)
    assert all(torch.equal(after[k], before[k]) for k in after if k not in (emb, "encoder.embed_tokens.weight"))
    with torch.no_grad():
        assert torch.equal(t5(rows.ids).last_hidden_state, states)
    weight = t5.get_input_embeddings().weight
    assert not weight.requires_grad
    weight.requires_grad_(True)  # the gradient mask is gone with the stage
    weight[rows.ids].sum().backward()
    assert weight.grad[rows.ids.unique()].abs().sum() > 0


def test_training_makes_a_filler_change_the_prediction_less():
    t5, rows, predict = _tiny_world()
    stats = train_unseen_rows([rows], predict, UnseenRowsConfig(steps=150, batch=16, lr=0.05, seed=1))
    assert stats["unseen"] == [len(rows.unseen)]
    assert stats["loss_before"] > 0
    assert stats["loss_after"] < 0.2 * stats["loss_before"]
