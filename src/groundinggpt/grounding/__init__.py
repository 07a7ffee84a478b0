"""Grounding: the text format of boxes and time spans, its parser, the metrics, the task registry.

The metrics are imported lazily: torchmetrics takes seconds to import, and most users of the
format (data generation, dataset workers) never need it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from groundinggpt.grounding.format import (
    box_iou,
    format_box,
    format_boxes,
    format_span,
    paired_box_iou,
    paired_span_iou,
    parse_box,
    parse_boxes,
    parse_span,
    parse_spans,
    parse_yes_no,
    pope_answer,
    span_iou,
)

if TYPE_CHECKING:
    from groundinggpt.grounding.metrics import (
        BoxAccuracy,
        PopeMetrics,
        TemporalGroundingRecall,
        pope_rates,
        threshold_hits,
        threshold_rates,
    )
    from groundinggpt.grounding.tasks import GroundingMetrics, GroundingTask, baseline_metrics

_LAZY = {
    "BoxAccuracy": "metrics",
    "PopeMetrics": "metrics",
    "TemporalGroundingRecall": "metrics",
    "pope_rates": "metrics",
    "threshold_hits": "metrics",
    "threshold_rates": "metrics",
    "GroundingMetrics": "tasks",
    "GroundingTask": "tasks",
    "baseline_metrics": "tasks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"groundinggpt.grounding.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BoxAccuracy",
    "GroundingMetrics",
    "GroundingTask",
    "PopeMetrics",
    "TemporalGroundingRecall",
    "baseline_metrics",
    "box_iou",
    "format_box",
    "format_boxes",
    "format_span",
    "paired_box_iou",
    "paired_span_iou",
    "parse_box",
    "parse_boxes",
    "parse_span",
    "parse_spans",
    "parse_yes_no",
    "pope_answer",
    "pope_rates",
    "span_iou",
    "threshold_hits",
    "threshold_rates",
]
