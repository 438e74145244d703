"""Where a phrase sits in a tokenised prompt: what ReFACT edits, the subject probe transplants
and the toy world's text encoders learn to route, found the same way everywhere."""

from __future__ import annotations


def tokenize(tok, prompts: list[str]):
    """Token ids and mask padded to the encoder's length, as the pipelines pad prompts."""
    return tok(prompts, padding="max_length", max_length=min(tok.model_max_length, 512), truncation=True,
               return_tensors="pt")


def subject_last_index(tok, prompt: str, phrase: str) -> int:
    """Position of the phrase's last token in the tokenised prompt."""
    end = prompt.rfind(phrase)
    if end < 0:
        raise ValueError(f"subject {phrase!r} not in prompt {prompt!r}")
    ids = tok(prompt[: end + len(phrase)])["input_ids"]
    if ids and ids[-1] == tok.eos_token_id:
        ids = ids[:-1]
    return len(ids) - 1


ARTICLES = ("a ", "an ", "the ")


def noun_phrase(prompt: str) -> str:
    """'a blue circle' -> 'blue circle': the phrase whose last token is the subject."""
    low = prompt.lower()
    for art in ARTICLES:
        if low.startswith(art):
            return prompt[len(art):]
    return prompt
