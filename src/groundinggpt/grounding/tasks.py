"""The task registry: each grounding task is one entry, and everything task-specific reads it.

A `GroundingTask` knows how to parse an answer, which torchmetrics metric scores it (sum
states, so DDP-synced values equal one process's), its headline key (the rate a binomial test
judges against the trivial baseline) and its trivial baseline answer. `GroundingMetrics`
(training validation), `baseline_metrics` and `significance` (the run report) iterate over the
registry, so a new task is a `register_task` call plus its data config:

    >>> register_task(GroundingTask("count", parse_count, CountAccuracy, "accuracy",
    ...                             baseline=lambda targets: "0"))

Built in: ``rec`` and ``sl`` (the first box, `BoxAccuracy`), ``vtg`` (the first span,
`TemporalGroundingRecall`), ``pope`` (yes/no, `PopeMetrics`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric

from groundinggpt.grounding.format import (
    format_box,
    format_span,
    parse_box,
    parse_span,
    parse_yes_no,
)
from groundinggpt.grounding.metrics import (
    BoxAccuracy,
    PopeMetrics,
    TemporalGroundingRecall,
    binomial_p_value,
)


@dataclass(frozen=True)
class GroundingTask:
    """One task of the registry.

    Args:
        name: the task name of records and metric keys (``rec`` -> ``val/rec/acc@0.5``).
        parse: answer text -> prediction (None when it does not parse: a miss).
        metric: ``metric(thresholds, **kwargs)`` -> a torchmetrics `Metric` whose ``update``
            takes (predictions, targets) as `parse` returns them and whose ``compute`` returns
            ``{key: value}``; ``thresholds`` is ``{"box": (...), "span": (...)}``.
        headline: the key of the rate the run report tests against the baseline.
        baseline: parsed training targets -> the constant answer text of the trivial
            baseline (e.g. the mean box).
        update_scored: feeds the same metric with answers already scored in the benchmark's
            own units (``eval.py``: `groundinggpt.evaluation.scoring.score` results, dicts
            with ``score`` = IoU, or ``prediction`` / ``target`` = "yes"/"no"/None), so that
            training validation and evaluation count with one metric class per task.
        thresholds: the threshold family of the task (``"box"`` or ``"span"``; None: none).
    """

    name: str
    parse: Callable[[str], Any]
    metric: Callable[..., Metric]
    headline: str
    baseline: Callable[[Sequence[Any]], str]
    update_scored: Callable[[Metric, Sequence[Mapping[str, Any]]], None] | None = None
    thresholds: str | None = None


REGISTRY: dict[str, GroundingTask] = {}


def register_task(task: GroundingTask, replace: bool = False) -> GroundingTask:
    """Add ``task`` to the registry (``replace`` to redefine a name); returns it."""
    if task.name in REGISTRY and not replace:
        raise ValueError(f"task {task.name!r} is already registered")
    REGISTRY[task.name] = task
    return task


def unregister_task(name: str) -> None:
    REGISTRY.pop(name, None)


def _mean_row(rows: Sequence[Sequence[float]]) -> list[float]:
    return torch.tensor(rows, dtype=torch.float64).mean(0).tolist()


def _update_iou(metric: Metric, results: Sequence[Mapping[str, Any]]) -> None:
    """IoU tasks: each result's ``score`` is its IoU in original units (0 for a miss)."""
    metric.update_iou(torch.tensor([float(r["score"]) for r in results], dtype=torch.float64))


def _update_yes_no(metric: Metric, results: Sequence[Mapping[str, Any]]) -> None:
    """Yes/no tasks: ``prediction`` "yes"/"no" (None: skipped, a miss), ``target`` "yes"/"no"."""
    for r in results:
        if r.get("target") not in ("yes", "no"):
            raise ValueError(f"result {r.get('id')!r} has yes/no target {r.get('target')!r}")
    preds = [None if r.get("prediction") is None else r["prediction"] == "yes" for r in results]
    metric.update(preds, [r["target"] == "yes" for r in results])


for _name in ("rec", "sl"):
    register_task(
        GroundingTask(
            _name,
            parse_box,
            lambda thresholds, **kw: BoxAccuracy(thresholds["box"], **kw),
            "acc@0.5",
            lambda targets: format_box(_mean_row(targets)),
            _update_iou,
            "box",
        )
    )
register_task(
    GroundingTask(
        "vtg",
        parse_span,
        lambda thresholds, **kw: TemporalGroundingRecall(thresholds["span"], **kw),
        "r1@0.5",
        lambda targets: format_span(_mean_row(targets)),
        _update_iou,
        "span",
    )
)
register_task(
    GroundingTask("pope", parse_yes_no, lambda thresholds, **kw: PopeMetrics(**kw), "accuracy",
                  lambda targets: "Yes.", _update_yes_no)
)  # fmt: skip


def _parse_reference(task: str, text: str, index: int) -> Any:
    value = REGISTRY[task].parse(text)
    if value is None:
        raise ValueError(f"reference {index} of task {task!r} does not parse: {text!r}")
    return value


class _TaskCounts(Metric):
    """Samples seen per task, synced like the metrics so every rank agrees on empty tasks."""

    full_state_update = False

    def __init__(self, n: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("counts", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, index: int, n: int) -> None:
        self.counts[index] += n

    def compute(self) -> torch.Tensor:
        return self.counts.clone()


class GroundingMetrics(nn.Module):
    """The metrics of every registered task, fed with generated text and reference text.

    Outputs and references are parsed with their task's parser (the first box for ``rec`` and
    ``sl``, the first span for ``vtg``, yes/no for ``pope``). Samples of unregistered tasks
    (captions, chat) are ignored and counted in `num_ignored` (this process only, not synced).
    A reference that does not parse is a data bug and raises `ValueError` before any state
    changes. The tasks are those registered when the object is built.

    Args:
        box_thresholds: IoU thresholds of box tasks (``rec``, ``sl``).
        span_thresholds: temporal IoU thresholds of span tasks (``vtg``).
        sync_on_compute: sync states across DDP ranks in `compute` (turn off to compute on
            one rank only, e.g. for baselines).

    Example:
        >>> m = GroundingMetrics()
        >>> m.update(["rec", "pope", "caption"], ["[0, 0, 0.5, 1]", "Yes.", "a cat"],
        ...          ["[0.0, 0.0, 1.0, 1.0]", "No.", "a dog"])
        >>> m.compute()["rec/acc@0.5"], m.compute()["pope/accuracy"], m.num_ignored
        (1.0, 0.0, 1)
    """

    def __init__(
        self,
        box_thresholds: Sequence[float] = (0.5,),
        span_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
        sync_on_compute: bool = True,
    ) -> None:
        super().__init__()
        kw = {"sync_on_compute": sync_on_compute}
        thresholds = {"box": tuple(box_thresholds), "span": tuple(span_thresholds)}
        self.tasks = tuple(REGISTRY)
        self.metrics = nn.ModuleDict(
            {name: REGISTRY[name].metric(thresholds, **kw) for name in self.tasks}
        )
        self.counts = _TaskCounts(len(self.tasks), **kw)
        self.num_ignored = 0

    def update(
        self, tasks: Sequence[str], outputs: Sequence[str], references: Sequence[str]
    ) -> None:
        if not len(tasks) == len(outputs) == len(references):
            raise ValueError(
                f"got {len(tasks)} tasks, {len(outputs)} outputs and {len(references)} references"
            )
        groups: dict[str, tuple[list, list]] = {task: ([], []) for task in self.tasks}
        ignored = 0
        for i, (task, out, ref) in enumerate(zip(tasks, outputs, references, strict=True)):
            if task not in groups:
                ignored += 1
                continue
            groups[task][1].append(_parse_reference(task, ref, i))
            groups[task][0].append(REGISTRY[task].parse(out))
        self.num_ignored += ignored
        for k, (task, (preds, targets)) in enumerate(groups.items()):
            if targets:
                self.metrics[task].update(preds, targets)
                self.counts.update(k, len(targets))

    def compute(self) -> dict[str, float]:
        """Flat ``{"task/key": value}``; tasks without samples (on all ranks) are omitted."""
        with warnings.catch_warnings():  # "compute before update" is expected on an empty rank
            warnings.simplefilter("ignore")
            counts = self.counts.compute().tolist()
            out: dict[str, float] = {}
            for task, n in zip(self.tasks, counts, strict=True):
                if n == 0:  # the same on every rank after the sync: no rank skips a collective
                    continue
                values = self.metrics[task].compute()
                out.update({f"{task}/{key}": float(v) for key, v in values.items()})
                out[f"{task}/count"] = float(n)
        return out

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()
        self.counts.reset()
        self.num_ignored = 0


def baseline_metrics(
    train_references: Mapping[str, Sequence[str]],
    eval_references: Mapping[str, Sequence[str]],
) -> dict[str, float]:
    """Metrics of each task's trivial constant answer, to read model numbers against.

    ``rec``/``sl`` answer the coordinate-wise mean training box, ``vtg`` the mean training span
    (both formatted as the model would write them), ``pope`` always "yes". Computed with
    `GroundingMetrics` on one process; keys as its `compute`, only for registered tasks of
    ``eval_references``.
    """
    metrics = GroundingMetrics(sync_on_compute=False)
    for task, refs in eval_references.items():
        if task not in REGISTRY or not refs:
            continue
        train = train_references.get(task, [])
        if not train and task != "pope":
            raise ValueError(f"no training references for task {task!r}: cannot build its baseline")
        targets = [_parse_reference(task, ref, i) for i, ref in enumerate(train)]
        answer = REGISTRY[task].baseline(targets)
        metrics.update([task] * len(refs), [answer] * len(refs), list(refs))
    return metrics.compute()


def significance(metrics: Mapping[str, float], split: str = "val") -> dict[str, float]:
    """``<split>/<task>/p_value``: each task's headline metric against its ``baseline/`` value.

    Needs ``<split>/<task>/count`` (the samples scored) beside the metric and its baseline.
    A baseline of 0 is taken as a rate of ``1 / (2 n)``.
    """
    out = {}
    for task, entry in REGISTRY.items():
        key = entry.headline
        value, count = metrics.get(f"{split}/{task}/{key}"), metrics.get(f"{split}/{task}/count")
        base = metrics.get(f"baseline/{split}/{task}/{key}")
        if value is None or count is None or base is None:
            continue
        n = int(count)
        # A baseline that scored 0 of n is read as a rate of 1/(2n) (between none and one
        # hit): against a rate of exactly 0 a single lucky hit would be "certain".
        rate = max(float(base), 0.5 / n) if n else float(base)
        out[f"{split}/{task}/p_value"] = binomial_p_value(round(value * n), n, rate)
    return out


__all__ = [
    "REGISTRY",
    "GroundingMetrics",
    "GroundingTask",
    "baseline_metrics",
    "register_task",
    "significance",
    "unregister_task",
]
