"""Learning-rate schedules the module builds from ``(optimizer, num_warmup_steps,
num_training_steps)`` — the call `GroundingLitModule.configure_optimizers` makes.

transformers' cosine schedule already has that signature; its warm-up / stable / decay schedule
counts the decay in steps, which a config cannot know before the mixture is built. This module
states the decay as a share of the run instead.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers


def warmup_stable_decay(
    optimizer: torch.optim.Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    decay_ratio: float = 0.2,
    **kwargs: Any,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, the peak rate held, then a decay over the last ``decay_ratio`` of the run.

    ``kwargs`` go to `transformers.get_wsd_schedule` (``decay_type``, ``min_lr_ratio``...).
    """
    if not 0.0 < decay_ratio <= 1.0:
        raise ValueError(f"decay_ratio is a share of the run in (0, 1], got {decay_ratio}")
    num_decay_steps = max(1, round(decay_ratio * num_training_steps))
    if num_warmup_steps + num_decay_steps > num_training_steps:
        raise ValueError(
            f"warm-up ({num_warmup_steps} steps) and decay ({num_decay_steps}) do not fit in "
            f"{num_training_steps} steps: lower module.warmup_ratio or the decay_ratio"
        )
    return transformers.get_wsd_schedule(
        optimizer,
        num_warmup_steps=num_warmup_steps,
        num_decay_steps=num_decay_steps,
        num_training_steps=num_training_steps,
        **kwargs,
    )
