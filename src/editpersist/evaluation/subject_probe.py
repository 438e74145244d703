"""Can an edit confined to the subject's last token change what a model draws?

ReFACT (and ROME before it) edits one MLP layer so that the output at the subject's
last token becomes v*; what follows must read the edit from there. That works when the
text encoder binds a phrase's attributes into its last token (real CLIP: "blue circle" ->
the state of "circle" carries "blue", and the EOS state attends to it). This probe
measures it without any optimisation: for every layer L it replaces the source prompt's
subject state after layer L by the destination prompt's subject state (a transplant) and
counts the generated images that show the destination. It bounds edits that change the
subject position alone; a weight edit also acts at every other position whose key
resembles the subject's, and can take where the transplant does not (toy FLUX's
appearance edit, docs/editors.md "ReFACT on the toy world"). When no layer's transplant takes, look
to the encoder before blaming the editor's optimiser.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import NamedTuple

import torch

from ..hooks import captured, matching_rows, transplanted
from ..tokens import noun_phrase, subject_last_index, tokenize


def layer_count(pipe, family) -> int:
    """Number of blocks of the encoder that ReFACT edits on this family."""
    site = family.refact_sites(0)[0]
    blocks = getattr(pipe, site.component).get_submodule(site.block.rsplit(".", 1)[0])
    return len(blocks)


@torch.no_grad()
def subject_state(encoder, tok, block: torch.nn.Module, prompt: str, phrase: str) -> torch.Tensor:
    """The residual state after `block` at the phrase's last token of `prompt`."""
    with captured(block) as seen:
        # No attention mask: the state the pipelines' own encode_prompt computes.
        encoder(tokenize(tok, [prompt]).input_ids.to(encoder.device))
    return seen["h"][0, subject_last_index(tok, prompt, phrase)]


class TransplantSite(NamedTuple):
    encoder: torch.nn.Module
    source_ids: torch.Tensor  # the source prompt's unpadded token ids, special tokens included
    block: torch.nn.Module
    position: int
    state: torch.Tensor


def transplant_sites(pipe, family, source: str, target: str, layer: int) -> list[TransplantSite]:
    """Per ReFACT site: the source's subject position and the target's subject state at that
    layer. Subjects are the noun phrases' last tokens, as ReFACT keys them."""
    out = []
    src_phrase, dst_phrase = noun_phrase(source), noun_phrase(target)
    for site in family.refact_sites(layer):
        encoder, tok = getattr(pipe, site.component), getattr(pipe, site.tokenizer)
        block = encoder.get_submodule(site.block)
        out.append(TransplantSite(encoder, torch.tensor(tok(source).input_ids), block,
                                  subject_last_index(tok, source, src_phrase),
                                  subject_state(encoder, tok, block, target, dst_phrase)))
    return out


@contextmanager
def transplant_all(sites: list[TransplantSite]):
    """Every site's transplant at once (SDXL has two encoders), into the source prompt's
    encoding only: the pipelines also encode the negative (empty) prompt for guidance, and the
    destination's subject state put there would steer the images away from the destination,
    which no edit keyed on the subject does."""
    with ExitStack() as stack:
        for site in sites:
            rows = stack.enter_context(matching_rows(site.encoder, site.source_ids))
            stack.enter_context(transplanted(site.block, site.position, site.state, rows))
        yield
