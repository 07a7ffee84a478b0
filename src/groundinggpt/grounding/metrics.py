"""Grounding metrics as torchmetrics `Metric`s: box accuracy, temporal recall, POPE.

Every state is a sum (``dist_reduce_fx="sum"``), so a metric synced across DDP ranks gives
exactly the value of a single process on the union of the data. A prediction counts as a hit
at threshold ``t`` when its IoU is ``>= t`` (so IoU 0.5 exactly is a hit at 0.5), computed in
float64. A prediction that did not parse (None) is a miss with IoU 0.

`groundinggpt.grounding.tasks` registers each task (its parser, its metric from here, its
headline key) and routes generated text to the right metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric

from groundinggpt.grounding.format import (
    paired_box_iou,
    paired_span_iou,
)


def _check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(t) for t in thresholds)
    if not out or not all(0.0 < t <= 1.0 for t in out):
        raise ValueError(f"IoU thresholds must be a non-empty list in (0, 1], got {thresholds!r}")
    return out


def _check_lengths(preds: Sequence, targets: Sequence) -> None:
    if len(preds) != len(targets):
        raise ValueError(f"got {len(preds)} predictions but {len(targets)} targets")


class _IoUThresholdMetric(Metric):
    """Shared machinery: IoU per pair, hits per threshold, IoU sum, count."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    _width: int  # 4 for boxes, 2 for spans
    _prefix: str  # key prefix: "acc" or "r1"

    def __init__(self, thresholds: Sequence[float], **kwargs) -> None:
        super().__init__(**kwargs)
        self.thresholds = _check_thresholds(thresholds)
        n = len(self.thresholds)
        self.add_state("hits", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("iou_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def _iou(self, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _as_tensor(self, rows: Sequence[Sequence[float]], what: str) -> torch.Tensor:
        t = torch.as_tensor(rows, dtype=torch.float64, device=self.device)
        if t.ndim != 2 or t.shape[1] != self._width or not torch.isfinite(t).all():
            raise ValueError(f"{what} must be finite rows of {self._width} numbers, got {rows!r}")
        return t

    def update(
        self, preds: Sequence[Sequence[float] | None], targets: Sequence[Sequence[float]]
    ) -> None:
        _check_lengths(preds, targets)
        if not targets:
            return
        target = self._as_tensor(list(targets), "targets")  # (N, W)
        parsed = [p is not None for p in preds]
        pred = self._as_tensor(
            [p if p is not None else (0.0,) * self._width for p in preds], "predictions"
        )  # (N, W)
        valid = torch.tensor(parsed, device=self.device)  # (N,)
        self.update_iou(torch.where(valid, self._iou(pred, target), 0.0))  # (N,)

    def update_iou(self, iou: torch.Tensor) -> None:
        """Accumulate IoUs that are already computed, ``(N,)`` (0 for a miss)."""
        iou = iou.to(device=self.device, dtype=torch.float64).reshape(-1)  # (N,)
        self.hits += threshold_hits(iou, self.thresholds)  # (K,)
        self.iou_sum += iou.sum()
        self.total += iou.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        rates = threshold_rates(self.hits, self.total, self.thresholds, self._prefix)
        rates["miou"] = _ratio(self.iou_sum, self.total)
        return rates


def threshold_hits(iou: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """How many IoUs reach each threshold (``>=``, in float64): ``(N,) -> (K,)`` long."""
    iou = iou.to(torch.float64).reshape(-1)  # (N,)
    thr = torch.tensor(thresholds, dtype=torch.float64, device=iou.device)  # (K,)
    return (iou[:, None] >= thr[None, :]).sum(0)  # (K,)


def threshold_rates(
    hits: torch.Tensor, total: torch.Tensor, thresholds: Sequence[float], prefix: str
) -> dict[str, torch.Tensor]:
    """``{f"{prefix}@{t:g}": hits / total}``; no samples -> 0.0, not NaN."""
    return {f"{prefix}@{t:g}": _ratio(hits[i], total) for i, t in enumerate(thresholds)}


class BoxAccuracy(_IoUThresholdMetric):
    """Share of boxes whose IoU with the target is ``>=`` each threshold, plus mean IoU.

    Args:
        thresholds: IoU thresholds in (0, 1]; one ``acc@{t:g}`` key each.
        **kwargs: passed to `torchmetrics.Metric` (e.g. ``sync_on_compute``).

    Example:
        >>> m = BoxAccuracy()
        >>> m.update([(0.0, 0.0, 0.5, 1.0), None], [(0.0, 0.0, 1.0, 1.0)] * 2)
        >>> {k: float(v) for k, v in m.compute().items()}
        {'acc@0.5': 0.5, 'miou': 0.25}
    """

    _width = 4
    _prefix = "acc"

    def __init__(self, thresholds: Sequence[float] = (0.5,), **kwargs) -> None:
        super().__init__(thresholds, **kwargs)

    def _iou(self, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return paired_box_iou(preds, targets)


class TemporalGroundingRecall(_IoUThresholdMetric):
    """Recall@1 of time spans at temporal IoU thresholds (``r1@{t:g}``), plus mean IoU.

    Args:
        thresholds: temporal IoU thresholds in (0, 1].
        **kwargs: passed to `torchmetrics.Metric`.

    Example:
        >>> m = TemporalGroundingRecall()
        >>> m.update([(0.0, 0.6)], [(0.0, 1.0)])
        >>> {k: round(float(v), 2) for k, v in m.compute().items()}
        {'r1@0.3': 1.0, 'r1@0.5': 1.0, 'r1@0.7': 0.0, 'miou': 0.6}
    """

    _width = 2
    _prefix = "r1"

    def __init__(self, thresholds: Sequence[float] = (0.3, 0.5, 0.7), **kwargs) -> None:
        super().__init__(thresholds, **kwargs)

    def _iou(self, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return paired_span_iou(preds, targets)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` in float64, 0.0 where ``den`` is 0."""
    num, den = torch.as_tensor(num).to(torch.float64), torch.as_tensor(den).to(torch.float64)
    # Not den.clamp(min=1): float denominators below 1 (precision + recall in F1) are real.
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)


class PopeMetrics(Metric):
    """POPE binary metrics with "yes" as the positive class.

    An unparsable prediction (None) is wrong: a false negative when the label is yes, a false
    positive when the label is no, so it lowers accuracy and recall or precision. It is not a
    "yes" for ``yes_ratio`` (the share of answers that parsed as yes). ``unparsed`` is the
    share of predictions that did not parse. Any ratio with a zero denominator is 0.0.

    Args:
        **kwargs: passed to `torchmetrics.Metric`.

    Example:
        >>> m = PopeMetrics()
        >>> m.update([True, False, None, True], [True, True, False, False])
        >>> {k: round(float(v), 3) for k, v in m.compute().items()}["precision"]
        0.333
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    _STATES = ("tp", "fp", "tn", "fn", "unparsed_pos", "unparsed_neg")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in self._STATES:
            self.add_state(name, torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[bool | None], targets: Sequence[bool]) -> None:
        _check_lengths(preds, targets)
        if not all(isinstance(t, (bool, np.bool_)) for t in targets):
            raise ValueError(f"POPE targets must be booleans, got {list(targets)!r}")
        counts = dict.fromkeys(self._STATES, 0)
        for p, t in zip(preds, targets, strict=True):
            if p is None:
                counts["unparsed_pos" if t else "unparsed_neg"] += 1
            else:
                counts[("tp" if t else "fp") if p else ("fn" if t else "tn")] += 1
        for name, n in counts.items():
            setattr(self, name, getattr(self, name) + n)

    def compute(self) -> dict[str, torch.Tensor]:
        fn = self.fn + self.unparsed_pos
        fp = self.fp + self.unparsed_neg
        out = pope_rates(self.tp, fp, self.tn, fn)
        total = self.tp + self.tn + fp + fn
        # Unparsed answers are in fp / fn but are not "yes" answers.
        out["yes_ratio"] = _ratio(self.tp + self.fp, total)
        out["unparsed"] = _ratio(self.unparsed_pos + self.unparsed_neg, total)
        return out


def pope_rates(
    tp: torch.Tensor, fp: torch.Tensor, tn: torch.Tensor, fn: torch.Tensor
) -> dict[str, torch.Tensor]:
    """POPE's accuracy, precision, recall, F1 and yes-ratio ("yes" is positive) from counts.

    As in the POPE reference evaluation, except that a zero denominator gives 0.0 instead of
    raising. ``yes_ratio`` is ``(tp + fp) / total``: every wrong "no" is counted in ``fn``.
    """
    tp, fp, tn, fn = (torch.as_tensor(v) for v in (tp, fp, tn, fn))
    total = tp + fp + tn + fn
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, total),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "yes_ratio": _ratio(tp + fp, total),
    }


def binomial_p_value(hits: int, n: int, rate: float) -> float:
    """One-sided ``P(X >= hits)`` for ``X ~ Binomial(n, rate)``: is the model above ``rate``?

    Example:
        >>> round(binomial_p_value(8, 10, 0.5), 4)
        0.0547
    """
    if n <= 0:
        return 1.0
    if rate <= 0.0:
        return 0.0 if hits > 0 else 1.0
    if rate >= 1.0:
        return 1.0
    log_terms = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        + k * math.log(rate) + (n - k) * math.log1p(-rate)
        for k in range(max(hits, 0), n + 1)
    ]  # fmt: skip
    top = max(log_terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in log_terms))
