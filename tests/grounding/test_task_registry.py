"""A new task is one registry entry: parser, metric, headline and baseline; nothing else edited."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import torch
from torchmetrics import Metric

from groundinggpt.grounding.tasks import (
    REGISTRY,
    GroundingMetrics,
    GroundingTask,
    baseline_metrics,
    register_task,
    significance,
    unregister_task,
)


def parse_count(text: str) -> int | None:
    match = re.search(r"\d+", text)
    return int(match.group()) if match else None


class CountAccuracy(Metric):
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("hits", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds, targets) -> None:
        self.hits += sum(p == t for p, t in zip(preds, targets, strict=True))
        self.total += len(targets)

    def compute(self) -> dict[str, torch.Tensor]:
        return {"accuracy": self.hits / self.total.clamp(min=1)}


@pytest.fixture()
def count_task():
    task = GroundingTask(
        "count",
        parse_count,
        lambda thresholds, **kw: CountAccuracy(**kw),
        "accuracy",
        baseline=lambda targets: str(Counter(targets).most_common(1)[0][0]),
    )
    register_task(task)
    yield task
    unregister_task("count")


def test_a_registered_task_is_scored_beside_the_built_in_ones(count_task) -> None:
    metrics = GroundingMetrics()
    metrics.update(
        ["count", "count", "rec", "caption"],
        ["3 objects", "none", "[0, 0, 1, 1]", "a cat"],
        ["3", "2", "[0.0, 0.0, 1.0, 1.0]", "a dog"],
    )
    out = metrics.compute()
    assert out["count/accuracy"] == 0.5 and out["count/count"] == 2.0
    assert out["rec/acc@0.5"] == 1.0 and metrics.num_ignored == 1


def test_its_baseline_and_p_value_come_from_the_entry(count_task) -> None:
    base = baseline_metrics({"count": ["2", "2", "5"]}, {"count": ["2"] * 10 + ["5"] * 30})
    assert base["count/accuracy"] == 0.25  # always "2", the most common training answer
    report = {"val/count/accuracy": 0.75, "val/count/count": 40.0}
    report |= {f"baseline/val/{k}": v for k, v in base.items()}
    assert significance(report)["val/count/p_value"] < 1e-6


def test_names_are_unique_unless_replaced(count_task) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_task(count_task)
    register_task(count_task, replace=True)
    assert REGISTRY["count"] is count_task


def test_the_built_in_tasks() -> None:
    assert {"rec", "sl", "vtg", "pope"} <= set(REGISTRY)
    assert {t: REGISTRY[t].headline for t in ("rec", "sl", "vtg", "pope")} == {
        "rec": "acc@0.5", "sl": "acc@0.5", "vtg": "r1@0.5", "pope": "accuracy",
    }  # fmt: skip
