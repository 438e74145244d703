"""What an edit asks for, as plain data (no tensors): editors read it, tasks produce it."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class EditRequest:
    """One edit. `mode`: 'replace' (source -> target), 'erase' (source -> guide),
    or 'debias' (source balanced over `attributes` with `ratios`; an attribute is written next
    to `concept`, the noun it describes: 'a doctor at work' -> 'a female doctor at work')."""

    source: str
    target: str = ""
    mode: str = "replace"
    preserve: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    ratios: tuple[float, ...] = ()
    concept: str = ""
    # What the source shows before the edit, when the dataset names it apart from the source
    # (RoAD: "Canada's Prime Minister" shows "Justin Trudeau"); ReFACT contrasts the target with it.
    original: str = ""
    # The weight of each `preserve` prompt in a closed-form solve (UCE), in its order; empty: 1
    # each. uce-persist's shield sets them (editors/persist.py), inside the editor, and the
    # edit's sidecar records them.
    preserve_weights: tuple[float, ...] = ()

    def __post_init__(self):
        if self.preserve_weights and (len(self.preserve_weights) != len(self.preserve)
                                      or any(not w > 0 for w in self.preserve_weights)):
            raise InputError(f"edit request {self.source!r}: preserve_weights {self.preserve_weights} must give "
                             f"one positive weight per preserve prompt ({len(self.preserve)})")

    def weighted_preserve(self) -> list[tuple[str, float]]:
        """(prompt, weight) for every preserve prompt."""
        return list(zip(self.preserve, self.preserve_weights or (1.0,) * len(self.preserve)))

    @property
    def before(self) -> str:
        """What the source shows before the edit: `original` where the dataset names it, else the
        source itself ("a circle" shows a circle)."""
        return self.original or self.source


def debias_requests(phrasings, concept: str, attributes: tuple[str, ...],
                    ratios: tuple[float, ...]) -> tuple[EditRequest, ...]:
    """One debias request per phrasing of `concept`, as the official UCE script balances each
    phrasing with its own weights and its own measured ratio."""
    return tuple(EditRequest(p, mode="debias", attributes=tuple(attributes), ratios=tuple(ratios), concept=concept)
                 for p in phrasings)


def attribute_prompt(attribute: str, prompt: str, concept: str) -> str:
    """`prompt` with `attribute` written before the first whole-word occurrence of `concept`
    (one or more words): ('female', 'a doctor at work', 'doctor') -> 'a female doctor at work'.
    UCE's official encoding is the bare attribute ('female'): pass concept ''."""
    if not concept:
        return attribute
    words = prompt.split()
    plain = [w.lower().strip(".,;:!?'\"") for w in words]
    want = concept.lower().split()
    for i in range(len(words) - len(want) + 1):
        if plain[i:i + len(want)] == want:
            return " ".join(words[:i] + [attribute] + words[i:])
    raise InputError(f"debias prompt {prompt!r} does not name its concept {concept!r}")
