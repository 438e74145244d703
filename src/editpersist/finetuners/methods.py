"""The fine-tuning methods: one registry the config schema, the workflow's wildcards, the grid,
the trainer and the benchmarks read. The four differ only in what they train and on what data,
so each is a parameterisation of the one training core (finetuners/core.py), not a class."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FinetuneMethod:
    name: str
    # Trains a low-rank adapter (a file that can also be applied to other states of the model:
    # `evaluation.transfer`); otherwise every denoiser weight, stored as absolute weights.
    adapter: bool
    dora: bool = False  # the adapter is weight-decomposed (DoRA)
    # Prior preservation on class images generated beforehand from the model being tuned
    # (DreamBooth): doubles each step's batch.
    prior_preservation: bool = False
    # Bytes of the stored state / the checkpoint's, for the grid's cost model (BENCHMARKS.md,
    # storage: measured on toy SD; upper bounds at SD1.4 scale for the adapters).
    state_share: float = 0.69


FINETUNERS: dict[str, FinetuneMethod] = {m.name: m for m in (
    FinetuneMethod("lora", adapter=True, state_share=0.017),
    FinetuneMethod("dora", adapter=True, dora=True, state_share=0.021),
    FinetuneMethod("full", adapter=False),
    FinetuneMethod("dreambooth", adapter=False, prior_preservation=True),
)}
