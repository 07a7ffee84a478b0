"""Evaluation: benchmark readers (official annotation files), scoring and benchmark metrics.

`load_benchmark` reads a benchmark into `BenchmarkSample`s, `complete_meta` fills image sizes
and video durations from the media, `score` scores one answer, `BenchmarkMetrics` aggregates
scores per task. The scoring names are imported lazily: torchmetrics takes seconds to import
and data-loader workers need only the readers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from groundinggpt.evaluation.benchmarks import (
    BENCHMARK_TASKS,
    DEFAULT_PROMPTS,
    BenchmarkSample,
    complete_meta,
    load_benchmark,
)

if TYPE_CHECKING:
    from groundinggpt.evaluation.scoring import BenchmarkMetrics, score

_LAZY = {"BenchmarkMetrics", "score"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("groundinggpt.evaluation.scoring"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BENCHMARK_TASKS",
    "DEFAULT_PROMPTS",
    "BenchmarkMetrics",
    "BenchmarkSample",
    "complete_meta",
    "load_benchmark",
    "score",
]
