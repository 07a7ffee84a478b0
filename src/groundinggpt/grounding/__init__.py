"""Grounding: the text format of boxes and time spans, its parser, and the grounding metrics.

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
        GroundingMetrics,
        PopeMetrics,
        TemporalGroundingRecall,
        baseline_metrics,
        pope_rates,
        threshold_hits,
        threshold_rates,
    )

_LAZY = {
    "BoxAccuracy",
    "GroundingMetrics",
    "PopeMetrics",
    "TemporalGroundingRecall",
    "baseline_metrics",
    "pope_rates",
    "threshold_hits",
    "threshold_rates",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("groundinggpt.grounding.metrics"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BoxAccuracy",
    "GroundingMetrics",
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
