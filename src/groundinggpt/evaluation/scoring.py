"""Scoring one benchmark answer, and the benchmark metrics over many.

`score` turns a model's answer text into a prediction in the benchmark's own units and
compares it with the target there:

- ``rec`` / ``sl``: the first box of the answer is relative to the *padded square* image;
  it is mapped back to pixels of the original image (undoing the centred square padding)
  and clipped to the image, then compared with the pixel target. ``sl`` with several
  ground-truth boxes (VGGSS annotators) scores the best-matching box, and adds ``ciou``:
  the IoU of the predicted box with the union of all ground-truth boxes (the binary union
  map of the VGGSS evaluation code, computed exactly on rectangles instead of a 224 x 224
  raster).
- ``vtg``: the first span's fractions times the true video duration, in seconds.
- ``pope``: `groundinggpt.grounding.format.pope_answer`, the POPE reference rule.
- ``res``, ``gcg``, ``avs``: the answer's masks against the target masks in original
  pixels, `groundinggpt.evaluation.mask_scoring.score_masks` (`MaskBenchmarkMetrics`).

A skipped sample (``output=None``: missing or unreadable media) and an answer that does
not parse are misses: IoU 0, or a wrong yes/no. Nothing is dropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

from groundinggpt.evaluation.benchmarks import BenchmarkSample, complete_meta, is_complete
from groundinggpt.evaluation.mask_scoring import MaskBenchmarkMetrics, score_masks
from groundinggpt.evaluation.sample import MASK_TASKS
from groundinggpt.grounding.format import box_iou, parse_box, parse_span, pope_answer, span_iou
from groundinggpt.grounding.geometry import box_from_padded
from groundinggpt.grounding.metrics import _ratio, threshold_hits
from groundinggpt.grounding.tasks import REGISTRY

# The benchmark tasks this module scores in original units (eval.py); training validation
# scores every task of the registry in groundinggpt.grounding.tasks.
SCORED_TASKS = ("rec", "sl", "vtg", "pope")
EVAL_TASKS = (*SCORED_TASKS, *MASK_TASKS)  # every task eval.py keeps a metric for
REC_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_THRESHOLDS = {"rec": REC_THRESHOLDS, "sl": (0.5,), "vtg": (0.3, 0.5, 0.7)}
CIOU_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(21))  # VGGSS cIoU AUC grid
CIOU_HIT = 0.5  # "cIoU" of VGGSS papers: share of samples with cIoU >= 0.5


# --------------------------------------------------------------------------------- geometry


def _union_area(boxes: Sequence[Sequence[float]]) -> float:
    """Exact area covered by a few axis-aligned boxes (coordinate compression)."""
    boxes = [b for b in boxes if b[2] > b[0] and b[3] > b[1]]
    if not boxes:
        return 0.0
    xs = sorted({v for b in boxes for v in (b[0], b[2])})
    ys = sorted({v for b in boxes for v in (b[1], b[3])})
    area = 0.0
    for x0, x1 in zip(xs, xs[1:], strict=False):
        for y0, y1 in zip(ys, ys[1:], strict=False):
            if any(b[0] <= x0 and x1 <= b[2] and b[1] <= y0 and y1 <= b[3] for b in boxes):
                area += (x1 - x0) * (y1 - y0)
    return area


def union_iou(pred: Sequence[float], boxes: Sequence[Sequence[float]]) -> float:
    """IoU of a box with the union of ``boxes`` (VGGSS's cIoU for a box prediction).

    Example:
        >>> union_iou([0, 0, 2, 1], [[0, 0, 1, 1], [1, 0, 2, 1]])
        1.0
    """
    inter = [
        [max(pred[0], b[0]), max(pred[1], b[1]), min(pred[2], b[2]), min(pred[3], b[3])]
        for b in boxes
    ]
    union = _union_area([*boxes, pred])
    return _union_area(inter) / union if union > 0 else 0.0


# ---------------------------------------------------------------------------------- scoring


def _rounded(values: Sequence[float]) -> list[float]:
    # For predictions.jsonl only (1e-4 px / s); scores use the exact values.
    return [round(float(v), 4) for v in values]


def _score_box(sample: BenchmarkSample, output: str, result: dict) -> None:
    boxes = sample.meta.get("boxes") or [sample.target]
    rel = parse_box(output)
    if rel is None:
        result["unparsed"] = True
        return
    w, h = int(sample.meta["width"]), int(sample.meta["height"])
    pred = list(box_from_padded(rel, w, h, clip=True))
    result["prediction"] = _rounded(pred)
    result["score"] = max(box_iou(pred, b) for b in boxes)
    if sample.task == "sl":
        result["ciou"] = union_iou(pred, boxes)


def _score_span(sample: BenchmarkSample, output: str, result: dict) -> None:
    frac = parse_span(output)
    if frac is None:
        result["unparsed"] = True
        return
    duration = float(sample.meta["duration"])
    pred = [frac[0] * duration, frac[1] * duration]
    result["prediction"] = _rounded(pred)
    result["score"] = span_iou(pred, sample.target)


def score(
    sample: BenchmarkSample, output: str | None, masks: torch.Tensor | None = None
) -> dict[str, Any]:
    """Score one answer against its sample's target.

    Args:
        sample: the benchmark sample (completed with `complete_meta` if it is not yet).
        output: the generated text, or None when the sample was skipped (a miss).
        masks: mask tasks only: ``(n, H, W)`` mask logits of the answer's ``[SEG]`` tokens
            in original pixels (`score_masks`); None: no mask.

    Returns:
        ``{"id", "task", "prediction", "target", "score", "skipped", "unparsed"}`` (+ ``ciou``
        for ``sl``): prediction is a pixel box, a span in seconds, "yes"/"no" or None; score
        is the IoU (``rec``/``sl``/``vtg``, 0 for a miss) or 1.0/0.0 correctness (``pope``).

    Example:
        >>> s = BenchmarkSample("1", "rec", {"image": "a.jpg"}, "<image>\\nOutput the "
        ...     "coordinate of the dog.", [10, 0, 30, 20], {"width": 40, "height": 20})
        >>> score(s, "[0.250, 0.250, 0.750, 0.750]")["score"]
        1.0
    """
    if sample.task in MASK_TASKS:
        return score_masks(sample, output, masks)
    result: dict[str, Any] = {"id": sample.id, "task": sample.task, "prediction": None,
                              "target": sample.target, "score": 0.0,
                              "skipped": output is None, "unparsed": False}  # fmt: skip
    if sample.task == "sl":
        result["ciou"] = 0.0
    if output is None:
        return result
    if not is_complete(sample):
        sample = complete_meta(sample)
        result["target"] = sample.target
    if sample.task in ("rec", "sl"):
        _score_box(sample, output, result)
    elif sample.task == "vtg":
        _score_span(sample, output, result)
    elif sample.task == "pope":
        result["prediction"] = pope_answer(output)
        result["score"] = float(result["prediction"] == sample.target)
    else:
        raise ValueError(f"sample {sample.id}: unknown task {sample.task!r}")
    return result


# ---------------------------------------------------------------------------------- metrics


class BenchmarkMetrics(Metric):
    """Benchmark metrics of one task from `score` results; sum states, exact under DDP.

    The rates come from the task's own metric of the registry
    (`groundinggpt.grounding.tasks`: `BoxAccuracy`, `TemporalGroundingRecall`, `PopeMetrics`,
    the classes training validation uses), fed with the scores in original units through the
    task's ``update_scored``; this class adds the benchmark's counts and, for ``sl``, VGGSS's
    cIoU share and AUC.

    Keys (no split prefix): ``rec/acc@0.3`` ... ``rec/acc@0.9``, ``rec/miou``;
    ``sl/acc@0.5``, ``sl/miou``, ``sl/ciou`` (share of samples with cIoU >= 0.5),
    ``sl/auc`` (area under that share over cIoU thresholds 0, 0.05, ..., 1);
    ``vtg/r1@0.3``, ``vtg/r1@0.5``, ``vtg/r1@0.7``, ``vtg/miou``; ``pope/accuracy``,
    ``pope/precision``, ``pope/recall``, ``pope/f1``, ``pope/yes_ratio``; always
    ``{task}/count``, ``{task}/skipped`` and ``{task}/unparsed`` (counts). A skipped or
    unparsed sample is a miss (IoU 0; for POPE a wrong answer that is not a "yes").

    Args:
        task: a registered task that eval.py scores (`SCORED_TASKS`).
        thresholds: IoU thresholds (default: `DEFAULT_THRESHOLDS` of the task).
        **kwargs: passed to `torchmetrics.Metric`.

    Example:
        >>> m = BenchmarkMetrics("vtg")
        >>> m.update([{"task": "vtg", "score": 0.6, "skipped": False},
        ...           {"task": "vtg", "score": 0.0, "skipped": True}])
        >>> float(m.compute()["vtg/r1@0.5"]), float(m.compute()["vtg/skipped"])
        (0.5, 1.0)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, task: str, thresholds: Sequence[float] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if task not in SCORED_TASKS:
            raise ValueError(f"task must be one of {SCORED_TASKS}, got {task!r}")
        self.task = task
        entry = REGISTRY[task]
        self.thresholds = tuple(thresholds or DEFAULT_THRESHOLDS.get(task, ()))
        family = {entry.thresholds: self.thresholds} if entry.thresholds else {}
        self.rates = entry.metric(family, **kwargs)  # the registry's metric of the task
        self.update_scored = entry.update_scored
        for name in ("total", "skipped", "unparsed"):
            self.add_state(name, torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        if task == "sl":
            k = len(CIOU_THRESHOLDS)
            self.add_state("ciou_hits", torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, results: Sequence[dict[str, Any]]) -> None:
        wrong = [r.get("id") for r in results if r.get("task", self.task) != self.task]
        if wrong:
            raise ValueError(f"results of another task than {self.task!r}: ids {wrong[:5]}")
        if not results:
            return
        self.update_scored(self.rates, results)
        self.total += len(results)
        self.skipped += sum(bool(r.get("skipped")) for r in results)
        self.unparsed += sum(bool(r.get("unparsed")) for r in results)
        if self.task == "sl":
            ciou = torch.tensor([float(r.get("ciou", 0.0)) for r in results], dtype=torch.float64)
            self.ciou_hits += threshold_hits(ciou.to(self.device), CIOU_THRESHOLDS)  # (21,)

    def reset(self) -> None:
        super().reset()
        self.rates.reset()

    def merge_state(self, incoming_state) -> None:
        """Sum another instance's states into this one's, the task metric's included."""
        if isinstance(incoming_state, BenchmarkMetrics):
            self.rates.merge_state(incoming_state.rates)
        super().merge_state(incoming_state)

    def compute(self) -> dict[str, torch.Tensor]:
        t = self.task
        rates = {k: v for k, v in self.rates.compute().items() if k != "unparsed"}
        if t == "sl":
            share = [_ratio(h, self.total) for h in self.ciou_hits]  # (21,) shares
            rates["ciou"] = share[CIOU_THRESHOLDS.index(CIOU_HIT)]
            rates["auc"] = torch.trapezoid(
                torch.stack(share),
                torch.tensor(CIOU_THRESHOLDS, dtype=torch.float64, device=self.device),
            )
        counts = {"count": self.total, "skipped": self.skipped, "unparsed": self.unparsed}
        return {f"{t}/{k}": v for k, v in rates.items()} | {
            f"{t}/{k}": v.to(torch.float64) for k, v in counts.items()
        }


def task_metrics(
    task: str, gcg_java: bool | None = None
) -> BenchmarkMetrics | MaskBenchmarkMetrics:
    """The benchmark metric of ``task``: `BenchmarkMetrics` or, for masks, `MaskBenchmarkMetrics`.

    Example:
        >>> type(task_metrics("res")).__name__
        'MaskBenchmarkMetrics'
    """
    if task in MASK_TASKS:
        return MaskBenchmarkMetrics(task, java=gcg_java)
    return BenchmarkMetrics(task)


def compute_quietly(metric: BenchmarkMetrics | MaskBenchmarkMetrics) -> dict[str, float]:
    """``metric.compute()`` as floats, without torchmetrics' empty-metric warning.

    Example:
        >>> compute_quietly(BenchmarkMetrics("pope"))["pope/count"]
        0.0
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: float(v) for k, v in metric.compute().items()}
