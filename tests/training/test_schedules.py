from __future__ import annotations

import pytest
import torch

from groundinggpt.training.schedules import warmup_stable_decay


def _rates(steps: int, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_stable_decay(optimizer, num_training_steps=steps, **kwargs)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_then_peak_then_decay_over_the_last_share() -> None:
    rates = _rates(100, num_warmup_steps=10, decay_ratio=0.2)
    assert rates[0] == 0.0 and rates[5] == pytest.approx(0.5)
    assert all(r == pytest.approx(1.0) for r in rates[10:80])  # held at the peak
    decay = rates[80:]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert decay[-1] < 0.01


def test_decay_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="decay_ratio"):
        _rates(100, num_warmup_steps=10, decay_ratio=0.0)
    with pytest.raises(ValueError, match="do not fit"):
        _rates(100, num_warmup_steps=50, decay_ratio=0.6)
