"""Deterministic synthetic grounding dataset: shapes in images, events in videos, tones in audio."""

from groundinggpt.data.synthetic.generate import (
    DEFAULT_CONFIG,
    DEFAULT_SIZES,
    check_splits_disjoint,
    ensure_synthetic,
    load_records,
    uniform_sizes,
)

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_SIZES",
    "check_splits_disjoint",
    "ensure_synthetic",
    "load_records",
    "uniform_sizes",
]
