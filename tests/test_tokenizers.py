import pytest
from transformers import CLIPTokenizer, T5Tokenizer

from editpersist.toy.tokenizers import bpe_word, check_clip_ids, open_clip_merges, pruned_clip_vocab
from editpersist.toy.world import WorldSpec


def test_clip_tokenizer_splits_words_as_full_clip_bpe(tokenizer_dirs):
    tok = CLIPTokenizer.from_pretrained(tokenizer_dirs["clip"])
    words = WorldSpec().words()
    check_clip_ids(tok, words)  # raises on any mismatch
    ranks = {m: i for i, m in enumerate(open_clip_merges())}
    assert bpe_word("circle", ranks)[0] == ["circle</w>"]
    ids = tok("a photo of a red circle")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.convert_ids_to_tokens(ids[1:-1]) == ["a</w>", "photo</w>", "of</w>", "a</w>", "red</w>", "circle</w>"]


def test_clip_tokenizer_pads_to_model_max_length_and_keeps_unknown_words(tokenizer_dirs):
    tok = CLIPTokenizer.from_pretrained(tokenizer_dirs["clip"])
    enc = tok("a zebra", padding="max_length", max_length=tok.model_max_length)
    assert len(enc["input_ids"]) == tok.model_max_length == 16
    content = enc["input_ids"][1: sum(enc["attention_mask"]) - 1]
    # CLIP's unk token is <|endoftext|>; an unknown word must fall back to bytes, not to it.
    assert tok.unk_token_id not in content and len(content) > 2
    assert tok.decode(enc["input_ids"], skip_special_tokens=True).strip() == "a zebra"


def test_pruned_vocab_is_small_and_contains_bytes():
    vocab, merges = pruned_clip_vocab(WorldSpec().words())
    assert 512 < len(vocab) < 1000
    assert len(vocab) == 512 + len(merges) + 2


def test_t5_tokenizer_reloads_with_whole_words(tokenizer_dirs):
    tok = T5Tokenizer.from_pretrained(tokenizer_dirs["t5"])
    ids = tok("a photo of a red circle")["input_ids"]
    assert ids[-1] == tok.eos_token_id == 1 and tok.pad_token_id == 0
    assert tok.convert_ids_to_tokens(ids[:-1]) == ["▁a", "▁photo", "▁of", "▁a", "▁red", "▁circle"]
    assert tok.model_max_length == 12


@pytest.mark.parametrize("word", WorldSpec().words())
def test_t5_encodes_every_toy_word_without_unknowns(tokenizer_dirs, word):
    tok = T5Tokenizer.from_pretrained(tokenizer_dirs["t5"])
    assert tok.unk_token_id not in tok(word)["input_ids"]
