"""Scoring mask answers of the pixel-grounding benchmarks (``res``, ``gcg``, ``avs``).

The engine generates an answer, then one teacher-forced pass turns the hidden state before
each generated ``[SEG]`` into mask logits in original pixels
(`groundinggpt.training.segmentation.answer_masks`). `score_masks` compares them with the
sample's target masks, decoded at the original image size (`target_masks`):

- ``res``: the first mask (logits ``> 0``) against the expression's object: IoU for the row,
  cIoU / gIoU over the split (`MaskIoU`, LISA's and GLaMM's definitions).
- ``avs``: the first mask's logits against the frame's mask: AVSBench's IoU (an empty
  target scores the share of pixels predicted background) and F-score (beta^2 = 0.3) over
  the split (`SoundSegmentation`, per frame).
- ``gcg``: the ``k``-th ``[SEG]`` mask goes with the ``k``-th ``[SEG]`` of the text and the
  phrase of its ``<p>...</p>`` (`parse_seg_phrases`; a ``[SEG]`` without one keeps its mask
  under the phrase ``""``, which no ground-truth phrase matches); the caption without tags
  (`gcg_caption`) against the reference. Mask AP50, mIoU, recall, CIDEr (and METEOR with
  Java) over the split (`GCGMetrics`, GLaMM's evaluation).

An answer without ``[SEG]`` and a skipped sample (``output=None``) are misses: no mask, which
is IoU 0 for ``res``, an empty mask for ``avs`` and nothing predicted for ``gcg``. Nothing
is dropped: a sample whose target cannot be read (only possible when it was skipped) counts
in ``{task}/count`` and ``{task}/unscored`` but not in the mask metric.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from groundinggpt.evaluation.sample import MASK_TASKS, BenchmarkSample, read_mask_png
from groundinggpt.grounding.mask_metrics import (
    GCGMetrics,
    MaskIoU,
    SoundSegmentation,
    avsbench_iou,
    gcg_miou,
)
from groundinggpt.grounding.masks import decode_mask, encode_mask
from groundinggpt.modalities import SEG_TOKEN

_SEG_SPLIT = re.compile(re.escape(SEG_TOKEN))
_TAG = re.compile(r"</?p>")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?])")


# ----------------------------------------------------------------------------------- text


def parse_seg_phrases(text: str) -> list[str | None]:
    """The phrase of each ``[SEG]`` of an answer, in order (None where it has none).

    A ``[SEG]``'s phrase is the text of the last ``<p>`` opened since the previous ``[SEG]``,
    up to its ``</p>`` (or up to the ``[SEG]`` when ``</p>`` is missing), stripped. Tolerant,
    never raises: a non-string gives ``[]``, an empty phrase is None.

    Example:
        >>> parse_seg_phrases("<p>A man</p> [SEG] rides <p>a horse</p>[SEG]. [SEG]")
        ['A man', 'a horse', None]
    """
    if not isinstance(text, str):
        return []
    stretches = _SEG_SPLIT.split(text)[:-1]  # the text before each [SEG]
    return [_phrase_of(stretch) for stretch in stretches]


def _phrase_of(stretch: str) -> str | None:
    start = stretch.rfind("<p>")
    if start < 0:
        return None
    phrase = stretch[start + 3 :].split("</p>", 1)[0].strip()
    return phrase or None


def gcg_caption(text: str) -> str:
    """The caption of a GCG answer: ``<p>``, ``</p>`` and ``[SEG]`` removed, spaces tidied.

    As GLaMM's ``eval/gcg/infer.py`` cleans its output before CIDEr / METEOR, and without
    the space left before punctuation. Never raises (a non-string gives ``""``).

    Example:
        >>> gcg_caption("<p>A man</p> [SEG] rides <p>a horse</p> [SEG].")
        'A man rides a horse.'
    """
    if not isinstance(text, str):
        return ""
    plain = " ".join(_TAG.sub(" ", text).replace(SEG_TOKEN, " ").split())
    return _SPACE_BEFORE_PUNCT.sub(r"\1", plain).strip()


# -------------------------------------------------------------------------------- targets


def target_masks(sample: BenchmarkSample) -> list[np.ndarray]:
    """The sample's target masks as ``(H, W)`` bool arrays of the original image.

    ``res``: one; ``gcg``: one per phrase in caption order; ``avs``: the mask PNG. The size is
    the sample's ``meta`` ``height`` / ``width`` (AVSBench: the PNG's, which must agree).

    Raises:
        ValueError: the size is unknown or a segmentation does not fit it.
        MediaError: an AVSBench mask PNG is missing or unreadable.

    Example:
        >>> s = BenchmarkSample("1", "res", {}, "q", [[0, 0, 2, 0, 2, 2]],
        ...                     {"width": 3, "height": 3})
        >>> target_masks(s)[0].shape
        (3, 3)
    """
    if sample.task == "avs":
        mask = read_mask_png(sample.target)
        size = (sample.meta.get("height"), sample.meta.get("width"))
        if None not in size and tuple(mask.shape) != (int(size[0]), int(size[1])):
            raise ValueError(f"sample {sample.id}: mask {mask.shape} and image {size} differ")
        return [mask]
    height, width = sample.meta.get("height"), sample.meta.get("width")
    if height is None or width is None:
        raise ValueError(f"sample {sample.id}: image size unknown")
    return [decode_mask(seg, int(height), int(width)) for seg in sample.segmentations()]


def _readable_targets(sample: BenchmarkSample) -> list[np.ndarray] | None:
    try:
        return target_masks(sample)
    except (ValueError, OSError, KeyError, TypeError):
        return None


# -------------------------------------------------------------------------------- scoring


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    """IoU of two ``(H, W)`` bool masks; 1.0 when both are empty (LISA's convention).

    Example:
        >>> mask_iou(torch.tensor([[True, False]]), torch.tensor([[True, True]]))
        0.5
    """
    union = int((pred | target).sum())
    return float((pred & target).sum()) / union if union else 1.0


def _per_mask_ious(task: str, logits: torch.Tensor, targets: list[torch.Tensor]) -> list[float]:
    """res: each mask vs the target; avs: AVSBench's IoU; gcg: each vs its best target."""
    if task == "avs":
        return [float(avsbench_iou(x.sigmoid(), targets[0])) for x in logits]
    masks = logits > 0
    if task == "res":
        return [mask_iou(m, targets[0]) for m in masks]
    return [max((mask_iou(m, t) for t in targets), default=0.0) for m in masks]


def _gcg_image_score(masks: torch.Tensor, targets: list[torch.Tensor]) -> float:
    """GLaMM's per-image GCG mIoU: mean IoU of a greedy one-to-one pairing (0 without any)."""
    record = {
        "pred": [{"rle": encode_mask(m)} for m in masks],
        "gt": [{"rle": encode_mask(t)} for t in targets],
    }
    return gcg_miou([record])


def _sample_score(task: str, logits: torch.Tensor, targets: list[torch.Tensor]) -> float:
    if task == "gcg":
        return _gcg_image_score(logits > 0, targets)
    if logits.shape[0] == 0:
        return 0.0 if task == "res" else float(avsbench_iou(None, targets[0]))
    return _per_mask_ious(task, logits[:1], targets)[0]


def _prediction(task: str, output: str, logits: torch.Tensor) -> dict[str, Any] | None:
    if logits.shape[0] == 0:
        return None
    areas = [int(m.sum()) for m in logits > 0]
    if task == "gcg":
        return {"caption": gcg_caption(output), "areas": areas}
    return {"masks": len(areas), "areas": areas}


def score_masks(
    sample: BenchmarkSample, output: str | None, logits: torch.Tensor | None = None
) -> dict[str, Any]:
    """Score one mask answer against its sample's target masks (see the module docstring).

    Args:
        sample: a ``res``, ``gcg`` or ``avs`` sample (meta complete for a scored answer).
        output: the generated text; None when the sample was skipped (a miss).
        logits: ``(n, H, W)`` mask logits in original pixels, one per ``[SEG]`` of
            ``output``; None or ``n == 0``: no mask (a miss).

    Returns:
        The `groundinggpt.evaluation.scoring.score` keys (``score``: the first mask's IoU
        for res / avs, the image's paired mIoU for gcg; ``unparsed``: an answer without a
        mask) plus ``row`` (``num_masks``, ``mask_ious``, gcg ``phrases``: extra columns of
        the prediction row) and, for the metrics only, ``logits``, ``targets`` (tensors; None
        when the target cannot be read), ``output`` and ``caption``.

    Example:
        >>> s = BenchmarkSample("1", "res", {}, "q", [[0, 0, 2, 0, 2, 2]],
        ...                     {"width": 3, "height": 3})
        >>> r = score_masks(s, "It is.")
        >>> r["score"], r["unparsed"], r["row"]
        (0.0, True, {'num_masks': 0, 'mask_ious': []})
    """
    if sample.task not in MASK_TASKS:
        raise ValueError(f"sample {sample.id}: task {sample.task!r} is not a mask task")
    arrays = _readable_targets(sample)
    targets = None if arrays is None else [torch.from_numpy(t) for t in arrays]
    if output is None or logits is None:
        logits = torch.zeros(0, *(arrays[0].shape if arrays else (1, 1)))
    logits = logits.float().cpu()
    n = int(logits.shape[0])
    result: dict[str, Any] = {
        "id": sample.id,
        "task": sample.task,
        "prediction": None if output is None else _prediction(sample.task, output, logits),
        "target": sample.target,
        "score": 0.0 if targets is None else _sample_score(sample.task, logits, targets),
        "skipped": output is None,
        "unparsed": output is not None and n == 0,
        "logits": logits,
        "targets": targets,
        "output": output,
        "caption": sample.meta.get("caption"),
    }
    ious = [] if targets is None else _per_mask_ious(sample.task, logits, targets)
    result["row"] = {"num_masks": n, "mask_ious": [round(v, 4) for v in ious]}
    if sample.task == "gcg":
        result["row"]["phrases"] = _aligned(parse_seg_phrases(output), n)
    return result


def _aligned(phrases: list[str | None], n: int) -> list[str | None]:
    """One phrase per mask (the text and the ids count ``[SEG]`` alike; padded if not)."""
    return (phrases + [None] * n)[:n]


# -------------------------------------------------------------------------------- metrics


class MaskCounts(Metric):
    """Sample counts of a mask task: all, skipped, without a mask, target unreadable."""

    full_state_update = False
    NAMES = ("total", "skipped", "unparsed", "unscored")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in self.NAMES:
            self.add_state(name, torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, results: Sequence[Mapping[str, Any]]) -> None:
        self.total += len(results)
        self.skipped += sum(bool(r["skipped"]) for r in results)
        self.unparsed += sum(bool(r["unparsed"]) for r in results)
        self.unscored += sum(r["targets"] is None for r in results)

    def compute(self) -> dict[str, torch.Tensor]:
        keys = ("count", "skipped", "unparsed", "unscored")
        return {
            k: getattr(self, n).to(torch.float64) for k, n in zip(keys, self.NAMES, strict=True)
        }


class MaskBenchmarkMetrics(nn.Module):
    """Benchmark metrics of one mask task from `score_masks` results, exact under DDP.

    Keys (no split prefix): ``res/ciou``, ``res/giou``; ``avs/miou``, ``avs/fscore``;
    ``gcg/ap50``, ``gcg/miou``, ``gcg/recall``, ``gcg/cider`` (+ ``gcg/meteor`` with Java);
    always ``{task}/count``, ``{task}/skipped``, ``{task}/unparsed`` (answers without a mask)
    and ``{task}/unscored`` (targets that could not be read: not in the mask metric).

    Args:
        task: ``"res"``, ``"gcg"`` or ``"avs"``.
        java: GCG's METEOR and PTB tokenizer (`GCGMetrics`): None when ``java`` is on PATH.

    Example:
        >>> m = MaskBenchmarkMetrics("res")
        >>> m.update([score_masks(sample, "It is.")])  # doctest: +SKIP
        >>> m.compute()["res/giou"]  # doctest: +SKIP
        tensor(0., dtype=torch.float64)
    """

    def __init__(self, task: str, java: bool | None = None) -> None:
        super().__init__()
        if task not in MASK_TASKS:
            raise ValueError(f"task must be one of {MASK_TASKS}, got {task!r}")
        self.task = task
        self.counts = MaskCounts()
        if task == "res":
            self.scorer = MaskIoU()
        elif task == "avs":
            self.scorer = SoundSegmentation(from_logits=True)
        else:
            self.scorer = GCGMetrics(java=java)

    def update(self, results: Sequence[Mapping[str, Any]]) -> None:
        wrong = [r.get("id") for r in results if r.get("task") != self.task]
        if wrong:
            raise ValueError(f"results of another task than {self.task!r}: ids {wrong[:5]}")
        if not results:
            return
        self.counts.update(results)
        scored = [r for r in results if r["targets"] is not None]
        if not scored:
            return
        if self.task == "gcg":
            self.scorer.update([_gcg_pred(r) for r in scored], [_gcg_target(r) for r in scored])
            return
        first = [r["logits"][0] if r["logits"].shape[0] else None for r in scored]
        if self.task == "res":
            first = [None if x is None else x > 0 for x in first]
        self.scorer.update(first, [r["targets"][0] for r in scored])

    def compute(self) -> dict[str, torch.Tensor]:
        values = self.scorer.compute()
        if self.task == "gcg":
            values["ap50"] = values.pop("mask_ap50")
        values.pop("n")
        values |= self.counts.compute()
        return {f"{self.task}/{k}": v for k, v in values.items()}

    def reset(self) -> None:
        self.counts.reset()
        self.scorer.reset()


def _gcg_pred(result: Mapping[str, Any]) -> dict[str, Any]:
    masks = result["logits"] > 0
    phrases = result["row"]["phrases"]
    return {
        "caption": gcg_caption(result["output"]),
        "phrases": [p or "" for p in phrases],
        "masks": list(masks),
    }


def _gcg_target(result: Mapping[str, Any]) -> dict[str, Any]:
    target = result["target"]
    return {
        "caption": result["caption"] or "",
        "phrases": [t["phrase"] for t in target],
        "masks": list(result["targets"]),
        "image_id": str(result["id"]),
    }


__all__ = [
    "MaskBenchmarkMetrics",
    "gcg_caption",
    "mask_iou",
    "parse_seg_phrases",
    "score_masks",
    "target_masks",
]
