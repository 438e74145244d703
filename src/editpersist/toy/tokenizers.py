"""Offline tokenizers for the toy models.

CLIP: the byte-level BPE that open_clip ships (``bpe_simple_vocab_16e6.txt.gz``),
pruned to the merges that the toy vocabulary actually uses. Pruning keeps the
merge order, so every toy word is split exactly as the full CLIP tokenizer
splits it, while the embedding table shrinks from 49,408 rows to a few hundred.
Unknown words still encode through the 512 byte-level tokens.

T5: a sentencepiece BPE model trained on the toy world's sentences, with
T5's id conventions (pad 0, eos 1, unk 2) and no sentinel tokens.

Both are written to a directory and reloaded with ``from_pretrained``: in
transformers 5.23 the file-path constructors silently ignore or misread the
files (design.md section 8), so ids are checked after the reload.
"""

from __future__ import annotations

import gzip
import io
import json
from functools import lru_cache
from pathlib import Path

from ..io import atomic_dir

CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"


@lru_cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def open_clip_merges() -> list[tuple[str, str]]:
    """The merges of open_clip's CLIP vocabulary, in rank order."""
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    # Same slice as open_clip.tokenizer.SimpleTokenizer: 49,152 - 256 - 2 merges.
    return [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]


def bpe_word(word: str, ranks: dict[tuple[str, str], int]) -> tuple[list[str], list[tuple[str, str]]]:
    """Encode one lower-case word with CLIP's BPE; return its tokens and the merges that fired."""
    b2u = _bytes_to_unicode()
    symbols = [b2u[b] for b in word.encode("utf-8")]
    symbols[-1] += "</w>"
    fired = []
    while len(symbols) > 1:
        pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        fired.append(best)
        merged, i = [], 0
        while i < len(symbols):
            if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols, fired


def pruned_clip_vocab(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of CLIP's BPE restricted to what `words` need."""
    merges = open_clip_merges()
    ranks = {m: i for i, m in enumerate(merges)}
    used = set()
    for w in words:
        used.update(bpe_word(w.lower(), ranks)[1])
    kept = [m for m in merges if m in used]
    return vocab_of_merges(kept), kept


def vocab_of_merges(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's token ids: the 256 bytes, the bytes ending a word, one token per merge, BOS, EOS."""
    base = list(_bytes_to_unicode().values())
    tokens = base + [t + "</w>" for t in base] + ["".join(m) for m in merges] + [CLIP_BOS, CLIP_EOS]
    return {t: i for i, t in enumerate(tokens)}


def full_clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's whole vocabulary (49,408 tokens, the ids of openai/clip-vit-large-patch14)."""
    merges = open_clip_merges()
    return vocab_of_merges(merges), merges


def build_full_clip_tokenizer(out_dir: Path, model_max_length: int = 77):
    """CLIP's own tokenizer (the one real SD, SDXL and FLUX folders ship), from open_clip's BPE file."""
    return write_clip_tokenizer(*full_clip_vocab(), out_dir, model_max_length)


def build_clip_tokenizer(words: list[str], out_dir: Path, model_max_length: int):
    """Write a CLIPTokenizer for `words` to out_dir and return it, reloaded from there."""
    tok = write_clip_tokenizer(*pruned_clip_vocab(words), out_dir, model_max_length)
    check_clip_ids(tok, words)
    return tok


def write_clip_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], out_dir: Path, model_max_length: int):
    from transformers import CLIPTokenizer

    with atomic_dir(out_dir) as tmp:
        (tmp / "vocab.json").write_text(json.dumps(vocab))
        (tmp / "merges.txt").write_text(
            "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
        )
        tok = CLIPTokenizer.from_pretrained(
            tmp, model_max_length=model_max_length, pad_token=CLIP_EOS
        )
        tok.save_pretrained(tmp)
    return CLIPTokenizer.from_pretrained(out_dir)


def check_clip_ids(tok, words: list[str]) -> None:
    """Fail loudly if the tokenizer does not split `words` exactly as CLIP's BPE does."""
    merges = open_clip_merges()
    ranks = {m: i for i, m in enumerate(merges)}
    for w in words:
        expected = bpe_word(w.lower(), ranks)[0]
        got = tok.convert_ids_to_tokens(tok(w, add_special_tokens=False)["input_ids"])
        if got != expected:
            raise RuntimeError(f"CLIP tokenizer splits {w!r} as {got}, expected {expected}")


def build_t5_tokenizer(sentences: list[str], out_dir: Path, vocab_size: int, normalization: str = "nmt_nfkc"):
    """Train a sentencepiece BPE model on `sentences`; write and reload a T5Tokenizer.
    `normalization` is sentencepiece's rule ("identity" keeps real prompts' characters as they
    are, so that every training sentence round-trips)."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        normalization_rule_name=normalization,
        num_threads=1,
        minloglevel=2,
    )
    with atomic_dir(out_dir) as tmp:
        (tmp / "spiece.model").write_bytes(model.getvalue())
        tok = T5Tokenizer.from_pretrained(tmp, extra_ids=0)
        tok.save_pretrained(tmp)
    tok = T5Tokenizer.from_pretrained(out_dir)
    check_t5_roundtrip(tok, sentences[:50])
    return tok


def check_t5_roundtrip(tok, sentences: list[str]) -> None:
    for s in sentences:
        ids = tok(s)["input_ids"]
        if ids[-1] != tok.eos_token_id or tok.unk_token_id in ids:
            raise RuntimeError(f"T5 tokenizer cannot encode {s!r}: ids {ids}")
        if tok.decode(ids, skip_special_tokens=True) != s:
            raise RuntimeError(f"T5 tokenizer does not round-trip {s!r}")
