"""A minimal, deterministic optimisation loop shared by pre-training and fine-tuning."""

from __future__ import annotations

import logging
import math
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

from ..errors import TrainingError

log = logging.getLogger("editpersist")


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_steps(
    params: Iterable[torch.nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    *,
    weight_decay: float = 0.0,
    warmup: int = 0,
    schedule: str = "cosine",
    grad_clip: float | None = 1.0,
    desc: str = "train",
    log_every: int = 100,
    on_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Run `steps` AdamW steps of loss_fn(step); return the per-step losses.

    A non-finite loss stops training at once with the step number, since every
    later step would only propagate the NaN into the saved weights.
    """
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, steps, warmup))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, mininterval=5.0)
    for step in bar:
        loss = loss_fn(step)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(
                f"{desc}: loss is {value} at step {step}; lower the learning rate or use fp32"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        sched.step()
        losses.append(value)
        if step % log_every == 0 or step == steps - 1:
            recent = losses[-log_every:]
            msg = f"{desc} step {step + 1}/{steps} loss {sum(recent) / len(recent):.4f}"
            bar.set_postfix_str(msg.split("loss ")[1])
            log.info(msg)
        if on_step is not None:
            on_step(step)
    return losses
