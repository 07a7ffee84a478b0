"""Mask metrics as torchmetrics `Metric`s: referring segmentation, AVSBench, GCG.

* `MaskIoU`: cIoU and gIoU of referring segmentation as LISA and GLaMM report them.
* `SoundSegmentation`: mIoU and F-score (beta^2 = 0.3) of AVSBench (S4 / MS3).
* `GCGMetrics`: grounded conversation generation as GLaMM evaluates it: mask AP50, mIoU,
  recall, CIDEr and METEOR.

`MaskIoU` and `SoundSegmentation` keep sums only (``dist_reduce_fx="sum"``), so a metric synced
across DDP ranks gives exactly the value of one process on the union of the data. `GCGMetrics`
needs every prediction at once (AP, CIDEr's document frequencies); it keeps one serialised
record per image in list states (``dist_reduce_fx="cat"``) and sorts them before computing,
so its values do not depend on how the images were split over ranks either. In all three, a
sample that DDP's sampler repeats to even out the ranks counts twice, as in any torchmetrics
metric.

Masks are ``(H, W)`` bool (or 0/1) tensors or numpy arrays; a prediction and its target must
have the same size (bring logits to the image first, e.g. with
`groundinggpt.grounding.masks.mask_logits_to_original`). ``None`` as a prediction means that
the model produced no mask: a miss.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from groundinggpt.grounding.masks import decode_mask, encode_mask

MaskLike = torch.Tensor | np.ndarray


def _check_lengths(preds: Sequence, targets: Sequence) -> None:
    if len(preds) != len(targets):
        raise ValueError(f"got {len(preds)} predictions but {len(targets)} targets")


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` in float64, 0.0 where ``den`` is 0."""
    num, den = torch.as_tensor(num).to(torch.float64), torch.as_tensor(den).to(torch.float64)
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)


def _as_mask(mask: MaskLike, device: torch.device, what: str) -> torch.Tensor:
    """A 2-D mask as a bool tensor on ``device`` (nonzero is foreground)."""
    t = mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.asarray(mask))
    if t.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (H, W) mask, got shape {tuple(t.shape)}")
    return t.to(device=device) != 0


def _as_map(pred: MaskLike, device: torch.device) -> torch.Tensor:
    """A 2-D float map (logits or probabilities) as a float32 tensor on ``device``."""
    t = pred if isinstance(pred, torch.Tensor) else torch.from_numpy(np.asarray(pred))
    if t.ndim != 2:
        raise ValueError(f"a prediction must be a 2-D (H, W) map, got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.float32)


def _check_same_size(pred: torch.Tensor, target: torch.Tensor, index: int) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"sample {index}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} "
            "differ in size"
        )


# --- referring segmentation: cIoU / gIoU ----------------------------------------------------


class MaskIoU(Metric):
    """cIoU and gIoU of referring segmentation, as LISA and GLaMM report them.

    Following the validation of LISA (dvlab-research/LISA, ``train_ds.py`` ``validate``) and
    GLaMM (mbzuai-oryx/groundingLMM, ``eval/referring_seg/infer_and_evaluate.py``), with
    ``I_i`` and ``U_i`` the foreground intersection and union of sample ``i``:

    * ``ciou = sum_i I_i / sum_i U_i`` (cumulative over the split),
    * ``giou = mean_i IoU_i`` with ``IoU_i = I_i / U_i``, and ``IoU_i = 1.0`` when
      ``U_i = 0`` (empty prediction for an empty target: LISA's ``acc_iou[union_i == 0] +=
      1.0``),
    * ``n``: the number of samples.

    LISA divides by ``U_i + 1e-5`` and ``sum U + 1e-10``; here the ratios are exact (0.0 when
    nothing was seen). LISA binarises logits at ``> 0``; here predictions come binary. A
    ``None`` prediction is a miss: intersection 0, union the target area (IoU 0, or 1.0 for
    an empty target). LISA's ``ignore_index=255`` pixels are not supported.

    Example:
        >>> m = MaskIoU()
        >>> full, half = torch.ones(2, 2, dtype=torch.bool), torch.tensor([[1, 1], [0, 0]])
        >>> m.update([half, None], [full, full])
        >>> {k: float(v) for k, v in m.compute().items()}
        {'ciou': 0.25, 'giou': 0.25, 'n': 2.0}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("intersection", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("union", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("iou_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[MaskLike | None], targets: Sequence[MaskLike]) -> None:
        """Add samples: binary predicted masks (None: no mask) and their target masks."""
        _check_lengths(preds, targets)
        for i, (pred, target) in enumerate(zip(preds, targets, strict=True)):
            t = _as_mask(target, self.device, "a target")
            if pred is None:
                inter, union = torch.zeros((), dtype=torch.long, device=self.device), t.sum()
            else:
                p = _as_mask(pred, self.device, "a prediction")
                _check_same_size(p, t, i)
                inter, union = (p & t).sum(), (p | t).sum()
            self.intersection += inter
            self.union += union
            self.iou_sum += torch.where(union > 0, _ratio(inter, union), 1.0)
            self.total += 1

    def compute(self) -> dict[str, torch.Tensor]:
        return {
            "ciou": _ratio(self.intersection, self.union),
            "giou": _ratio(self.iou_sum, self.total),
            "n": self.total.clone(),
        }


# --- AVSBench: mIoU / F-score ---------------------------------------------------------------


class SoundSegmentation(Metric):
    """mIoU and F-score of audio-visual segmentation, as the AVSBench evaluation computes them.

    Following OpenNLPLab/AVSBench (``avs_scripts/avs_s4/utils/utility.py``: ``mask_iou``,
    ``Eval_Fmeasure``, ``_eval_pr``; the same for MS3), per frame, with the prediction taken
    through a sigmoid first when ``from_logits``:

    * **IoU**: the mask is ``probability > 0.5``. ``IoU = |pred & gt| / |pred | gt|``; for a
      frame whose target is empty (no sounding object) it is the share of pixels predicted
      background, ``|~pred & ~gt| / |pixels|``.
    * **F-curve**: at 255 thresholds ``t = linspace(0, 1 - 1e-10, 255)`` (float32, as
      AVSBench), ``pred_t = probability >= t``, ``P = tp / (|pred_t| + 1e-20)``,
      ``R = tp / (|gt| + 1e-20)``, ``F = (1 + b2) P R / (b2 P + R)`` with ``b2 = 0.3`` (NaN
      -> 0). Frames with an empty target are left out of the F-score.

    and over the split (``average``):

    * ``"sample"`` (default): ``miou`` is the mean IoU over frames, ``fscore`` the maximum
      over thresholds of the mean F-curve over frames with a non-empty target.
    * ``"update"``: AVSBench's protocol, where every ``update`` call is one test batch:
      ``miou`` is the mean over calls of each call's mean IoU, ``fscore`` the mean over calls
      of the maximum of each call's mean F-curve (0 for a call without a non-empty target, as
      in AVSBench). Equal to AVSBench's numbers when ``update`` gets its batches (S4
      ``test.sh``: 4 videos x 5 frames).

    ``n`` is the number of frames. A ``None`` prediction counts as an empty mask for IoU (1.0
    on an empty target) and as an F-curve of zeros (an all-zero probability map would score
    at ``t = 0``, where every pixel is ``>= t``). Sums are float64; AVSBench's F arithmetic
    is float32, so values agree to about 1e-6; its ``+ 1e-7`` in the IoU denominator is
    left out (the union is never 0 here).

    Args:
        from_logits: predictions are logits (AVSBench's model output); False for
            probabilities in [0, 1].
        average: ``"sample"`` or ``"update"``, see above.
        **kwargs: passed to `torchmetrics.Metric`.

    Example:
        >>> m = SoundSegmentation(from_logits=False)
        >>> m.update([torch.tensor([[0.9, 0.2], [0.2, 0.2]])], [torch.tensor([[1, 1], [0, 0]])])
        >>> {k: round(float(v), 4) for k, v in m.compute().items()}  # P=1, R=1/2 at t > 0.2
        {'miou': 0.5, 'fscore': 0.8125, 'n': 1.0}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    beta2 = 0.3
    num_thresholds = 255

    def __init__(
        self,
        from_logits: bool = True,
        average: Literal["sample", "update"] = "sample",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if average not in ("sample", "update"):
            raise ValueError(f"average must be 'sample' or 'update', got {average!r}")
        self.from_logits = from_logits
        self.average = average
        k = self.num_thresholds
        for name, shape, dtype in (
            ("iou_sum", (), torch.float64),
            ("total", (), torch.long),
            ("f_curve_sum", (k,), torch.float64),
            ("f_count", (), torch.long),
            ("update_miou_sum", (), torch.float64),
            ("update_f_sum", (), torch.float64),
            ("updates", (), torch.long),
        ):
            self.add_state(name, torch.zeros(shape, dtype=dtype), dist_reduce_fx="sum")

    def thresholds(self) -> torch.Tensor:
        """AVSBench's 255 thresholds, float32: ``linspace(0, 1 - 1e-10, 255)``."""
        return torch.linspace(0, 1 - 1e-10, self.num_thresholds, device=self.device)

    def update(self, preds: Sequence[MaskLike | None], targets: Sequence[MaskLike]) -> None:
        """Add frames: predicted logit (or probability) maps, None for no mask, and targets."""
        _check_lengths(preds, targets)
        if not targets:
            return
        thresholds = self.thresholds()
        ious, curves = [], []
        for i, (pred, target) in enumerate(zip(preds, targets, strict=True)):
            t = _as_mask(target, self.device, "a target")
            prob = None
            if pred is not None:
                prob = _as_map(pred, self.device)
                _check_same_size(prob, t, i)
                prob = prob.sigmoid() if self.from_logits else prob
            ious.append(avsbench_iou(prob, t))
            if t.any():
                curves.append(avsbench_f_curve(prob, t, thresholds, self.beta2))
        iou = torch.stack(ious)  # (N,)
        self.iou_sum += iou.sum()
        self.total += iou.numel()
        self.update_miou_sum += iou.mean()
        self.updates += 1
        if curves:
            curve = torch.stack(curves)  # (M, K)
            self.f_curve_sum += curve.sum(0)
            self.f_count += curve.shape[0]
            self.update_f_sum += curve.mean(0).max()

    def compute(self) -> dict[str, torch.Tensor]:
        if self.average == "update":
            miou = _ratio(self.update_miou_sum, self.updates)
            fscore = _ratio(self.update_f_sum, self.updates)
        else:
            miou = _ratio(self.iou_sum, self.total)
            fscore = _ratio(self.f_curve_sum, self.f_count).max()
        return {"miou": miou, "fscore": fscore, "n": self.total.clone()}


def avsbench_iou(prob: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor:
    """AVSBench's IoU of one frame (float64); ``prob`` None is an empty prediction.

    Example:
        >>> float(avsbench_iou(None, torch.zeros(2, 2, dtype=torch.bool)))  # nothing, rightly
        1.0
    """
    pred = torch.zeros_like(target) if prob is None else prob > 0.5
    if not target.any():
        return (~pred).sum().to(torch.float64) / target.numel()
    return (pred & target).sum().to(torch.float64) / (pred | target).sum()


def avsbench_f_curve(
    prob: torch.Tensor | None, target: torch.Tensor, thresholds: torch.Tensor, beta2: float = 0.3
) -> torch.Tensor:
    """AVSBench's F-measure of one frame at each threshold, ``(K,)`` float64.

    ``pred_t = prob >= t``; counted with sorted probabilities and ``searchsorted``, which
    gives the same counts as AVSBench's comparisons. ``prob`` None gives zeros.

    Example:
        >>> prob, gt = torch.tensor([[0.9, 0.2]]), torch.tensor([[True, False]])
        >>> [round(f, 4) for f in avsbench_f_curve(prob, gt, torch.tensor([0.1, 0.5, 0.95])).tolist()]
        [0.5652, 1.0, 0.0]
    """
    if prob is None:
        return torch.zeros(thresholds.shape, dtype=torch.float64, device=thresholds.device)
    flat = prob.flatten().sort().values
    positive = prob[target].sort().values
    thresholds = thresholds.to(flat.dtype)
    n_pred = flat.numel() - torch.searchsorted(flat, thresholds)  # pixels >= t
    tp = positive.numel() - torch.searchsorted(positive, thresholds)
    tp, n_pred = tp.to(torch.float64), n_pred.to(torch.float64)
    precision = tp / (n_pred + 1e-20)
    recall = tp / (positive.numel() + 1e-20)
    f = (1 + beta2) * precision * recall / (beta2 * precision + recall)
    return torch.nan_to_num(f, nan=0.0)


# --- grounded conversation generation --------------------------------------------------------

_ARTICLES = frozenset({"a", "an", "the"})


def normalise_phrase(text: str) -> str:
    """Lower case, punctuation to spaces, articles dropped, whitespace collapsed.

    Example:
        >>> normalise_phrase("The Brown-Dog.")
        'brown dog'
    """
    words = re.sub(r"[^0-9a-z]+", " ", text.lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def phrase_containment_match(pred_phrase: str, gt_phrase: str) -> bool:
    """True when the normalised phrases are equal or one holds the other as whole words.

    The default ``phrase_match`` of `GCGMetrics`.

    Example:
        >>> phrase_containment_match("a dog", "the brown dog"), phrase_containment_match("do", "dog")
        (True, False)
    """
    a, b = normalise_phrase(pred_phrase), normalise_phrase(gt_phrase)
    if not a or not b:
        return False
    return f" {a} " in f" {b} " or f" {b} " in f" {a} "


class GCGMetrics(Metric):
    """Grounded conversation generation: mask AP50, mIoU, recall and caption metrics.

    Each image has a predicted caption with (phrase, mask) pairs and a ground truth caption
    with (phrase, mask) pairs. Following GLaMM's evaluation (mbzuai-oryx/groundingLMM,
    ``eval/gcg/evaluate.py``):

    * ``mask_ap50``: ``pycocotools.cocoeval.COCOeval`` with ``iouType="segm"``, one category,
      every predicted mask a detection (score 1.0 unless given), ``stats[1]`` (AP at IoU 0.5,
      101-point interpolation, up to 100 detections per image). 0.0 when there is no ground
      truth mask or no prediction at all.
    * ``miou``: per image, a one-to-one pairing of predicted and ground truth masks on IoU, the
      mean IoU of the pairs (0.0 for an image without pairs), then the mean over images.
      ``matching="greedy"`` is GLaMM's ``compute_miou``: repeatedly take the pair of highest
      IoU and remove its row and column, while that IoU is > 0. Unpaired ground truth masks do
      not count (they are not IoU 0). ``matching="hungarian"`` pairs with
      ``scipy.optimize.linear_sum_assignment`` (maximum total IoU) instead, keeping pairs with
      IoU > 0, averaged the same way.
    * ``recall``: GLaMM's ``find_best_matches``: repeatedly take the (ground truth,
      prediction) pair of highest IoU; stop as soon as that IoU is below ``iou_threshold``
      (0.5) or its phrases do not match (so a pair of lower IoU is never tried after a
      failure, as in GLaMM); else count it and remove both. ``recall = sum matched /
      sum ground truth phrases``. GLaMM matches phrases by the cosine similarity (>= 0.5) of
      mean-pooled ``bert-base-uncased`` embeddings, which needs a hub download; here
      ``phrase_match(pred_phrase, gt_phrase) -> bool`` decides, by default
      `phrase_containment_match` (normalised equality or whole-word containment). That is
      stricter than GLaMM's BERT threshold, which accepts most pairs of short noun phrases,
      so recall here is a lower bound of GLaMM's for the same masks.
    * ``cider`` (``pycocoevalcap`` ``Cider``) and ``meteor`` (``pycocoevalcap`` ``Meteor``)
      of the captions, as ``COCOEvalCap`` scores them after its PTB tokenizer. Both the PTB
      tokenizer and METEOR are Java programs: without ``java`` on PATH, ``meteor`` is left
      out of ``compute()``, captions are tokenised by `simple_caption_tokens` (lower case,
      punctuation dropped; CIDEr then differs slightly from COCOEvalCap's), and one warning
      says so.
    * ``n``: the number of images.

    IoU is exact (``pycocotools.mask.iou``); two empty masks have IoU 0 here (GLaMM's
    ``compute_iou`` gives NaN).

    **State and DDP.** Each image is kept as one JSON record (compressed RLE masks, phrases,
    captions, scores) in a ``uint8`` list state with ``dist_reduce_fx="cat"``, with its byte
    length in a second one. ``compute()`` sorts the records (by ``image_id`` when targets
    give one, which reproduces COCO's sorted image order; else by content) and numbers the
    images in that order, so every value, AP with tied scores included, is the same for any
    split of the images over ranks, and equals one process on all images.

    Args:
        phrase_match: ``(pred_phrase, gt_phrase) -> bool`` for ``recall``.
        matching: ``"greedy"`` (GLaMM) or ``"hungarian"`` pairing for ``miou``.
        iou_threshold: the IoU a recalled ground truth mask needs (GLaMM: 0.5).
        java: use the Java tools (PTB tokenizer, METEOR): None if ``java`` is on PATH
            (warning once if not), False never (no warning), True always (error if missing).
        **kwargs: passed to `torchmetrics.Metric`.

    ``update(preds, targets)`` takes one mapping per image. ``preds[i]``: ``"caption"`` (str),
    ``"phrases"`` (list of str), ``"masks"`` (same length: ``(H, W)`` masks or COCO RLE
    dicts), optionally ``"scores"`` (floats for AP). ``targets[i]``: ``"caption"`` (str, or a
    list of reference captions), ``"phrases"``, ``"masks"``, optionally ``"image_id"`` (int
    or str).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        phrase_match: Callable[[str, str], bool] = phrase_containment_match,
        matching: Literal["greedy", "hungarian"] = "greedy",
        iou_threshold: float = 0.5,
        java: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if matching not in ("greedy", "hungarian"):
            raise ValueError(f"matching must be 'greedy' or 'hungarian', got {matching!r}")
        if java and shutil.which("java") is None:
            raise RuntimeError("java=True but no `java` on PATH (needed for METEOR and PTB)")
        self.phrase_match = phrase_match
        self.matching = matching
        self.iou_threshold = float(iou_threshold)
        self.java = java
        self._warned = False
        self.add_state("records", [], dist_reduce_fx="cat")
        self.add_state("record_lengths", [], dist_reduce_fx="cat")

    def update(self, preds: Sequence[Mapping], targets: Sequence[Mapping]) -> None:
        """Add images: one prediction mapping and one target mapping each (see the class)."""
        _check_lengths(preds, targets)
        for i, (pred, target) in enumerate(zip(preds, targets, strict=True)):
            data = json.dumps(_gcg_record(pred, target, i), sort_keys=True).encode()
            self.records.append(
                torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device)
            )
            self.record_lengths.append(torch.tensor([len(data)], device=self.device))

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group=None) -> None:
        # A rank without images would otherwise send torchmetrics' float32 placeholder, which
        # does not gather with the other ranks' uint8 / int64 tensors.
        if not self.records:
            self.records.append(torch.zeros(0, dtype=torch.uint8, device=self.device))
            self.record_lengths.append(torch.zeros(0, dtype=torch.long, device=self.device))
        super()._sync_dist(dist_sync_fn, process_group)

    def gathered_records(self) -> list[dict[str, Any]]:
        """The image records, decoded and in their canonical (sorted) order."""
        if isinstance(self.records, list) and not self.records:
            return []
        data = dim_zero_cat(self.records).to(torch.uint8).cpu().numpy().tobytes()
        lengths = dim_zero_cat(self.record_lengths).long().cpu().tolist()
        offsets = np.cumsum([0, *lengths]).tolist()
        raw = [data[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        return [json.loads(r) for r in sorted(raw, key=_record_order)]

    def compute(self) -> dict[str, torch.Tensor]:
        records = self.gathered_records()
        use_java = self._use_java()
        out = {
            "mask_ap50": gcg_mask_ap50(records),
            "miou": gcg_miou(records, self.matching),
            "recall": gcg_recall(records, self.phrase_match, self.iou_threshold),
        }
        out.update(gcg_caption_scores(records, use_java))
        out["n"] = float(len(records))
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}

    def _use_java(self) -> bool:
        if self.java is not None:
            return bool(self.java)
        if shutil.which("java") is not None:
            return True
        if not self._warned:
            self._warned = True
            warnings.warn(
                "GCGMetrics: no `java` on PATH, so METEOR is left out and captions are "
                "tokenised in Python instead of by the PTB tokenizer (CIDEr may differ "
                "slightly from COCOEvalCap's). Install a Java runtime for both.",
                stacklevel=3,
            )
        return False


def _canonical_rle(mask: MaskLike | Mapping, what: str) -> dict[str, Any]:
    if isinstance(mask, Mapping):
        size = mask.get("size")
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise ValueError(f"{what}: an RLE mask needs a 'size' [h, w], got {size!r}")
        return encode_mask(decode_mask(mask, *size))
    return encode_mask(mask)


def _pairs(entry: Mapping, what: str) -> tuple[list[str], list[dict[str, Any]]]:
    phrases, masks = list(entry.get("phrases", [])), list(entry.get("masks", []))
    if len(phrases) != len(masks):
        raise ValueError(f"{what}: {len(phrases)} phrases but {len(masks)} masks")
    if not all(isinstance(p, str) for p in phrases):
        raise ValueError(f"{what}: phrases must be strings")
    return phrases, [_canonical_rle(m, what) for m in masks]


def _gcg_record(pred: Mapping, target: Mapping, index: int) -> dict[str, Any]:
    """One image as a JSON-ready record; checks sizes and lengths."""
    pred_phrases, pred_masks = _pairs(pred, f"prediction {index}")
    gt_phrases, gt_masks = _pairs(target, f"target {index}")
    sizes = {tuple(m["size"]) for m in pred_masks + gt_masks}
    if len(sizes) > 1:
        raise ValueError(f"image {index}: masks of different sizes {sorted(sizes)}")
    scores = [float(s) for s in pred.get("scores", [1.0] * len(pred_masks))]
    if len(scores) != len(pred_masks):
        raise ValueError(f"prediction {index}: {len(scores)} scores but {len(pred_masks)} masks")
    refs = target.get("caption", [])
    refs = [refs] if isinstance(refs, str) else list(refs)
    caption = pred.get("caption", "")
    if not refs or not all(isinstance(c, str) for c in [*refs, caption]):
        raise ValueError(f"image {index}: captions must be strings, with at least one reference")
    image_id = target.get("image_id")
    if image_id is not None and not isinstance(image_id, (int, str)):
        raise ValueError(f"target {index}: image_id must be an int or a str, got {image_id!r}")
    return {
        "id": image_id,
        "pred": [
            {"phrase": p, "rle": m, "score": s}
            for p, m, s in zip(pred_phrases, pred_masks, scores, strict=True)
        ],
        "gt": [{"phrase": p, "rle": m} for p, m in zip(gt_phrases, gt_masks, strict=True)],
        "caption": caption,
        "refs": refs,
    }


def _record_order(raw: bytes) -> tuple:
    image_id = json.loads(raw)["id"]
    if image_id is None:
        return (1, "", 0, raw)
    return (0, type(image_id).__name__, image_id, raw)


def _iou_matrix(rows: list[dict], cols: list[dict]) -> np.ndarray:
    """IoU of every row mask with every column mask (RLE dicts), ``(len(rows), len(cols))``."""
    if not rows or not cols:
        return np.zeros((len(rows), len(cols)))
    iou = mask_utils.iou(
        [_coco_rle(r) for r in rows], [_coco_rle(c) for c in cols], [0] * len(cols)
    )
    return np.asarray(iou, dtype=np.float64).reshape(len(rows), len(cols))


def _coco_rle(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode()}


def gcg_mask_ap50(records: Sequence[Mapping]) -> float:
    """COCO mask AP at IoU 0.5 over all images (``COCOeval`` ``segm``, ``stats[1]``)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, gts, dts = [], [], []
    for image_id, record in enumerate(records, start=1):
        size = next((m["rle"]["size"] for m in record["gt"] + record["pred"]), [0, 0])
        images.append({"id": image_id, "height": size[0], "width": size[1]})
        for gt in record["gt"]:
            rle = _coco_rle(gt["rle"])
            gts.append({
                "id": len(gts) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "segmentation": gt["rle"], "area": float(mask_utils.area(rle)),
                "bbox": mask_utils.toBbox(rle).tolist(),
            })  # fmt: skip
        for pred in record["pred"]:
            dts.append({
                "image_id": image_id, "category_id": 1, "segmentation": pred["rle"],
                "score": pred["score"],
            })  # fmt: skip
    if not gts or not dts:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": gts, "categories": [{"id": 1}]}
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(dts), "segm")
        evaluator.params.catIds = [1]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return max(float(evaluator.stats[1]), 0.0)


def _paired_ious(iou: np.ndarray, matching: str) -> list[float]:
    """The IoUs of a one-to-one pairing of the rows and columns of ``iou`` (pairs > 0 only)."""
    if iou.size == 0:
        return []
    if matching == "hungarian":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(iou, maximize=True)
        return [float(v) for v in iou[rows, cols] if v > 0]
    paired, left = [], iou.copy()
    while left.size > 0 and left.max() > 0:
        i, j = np.unravel_index(np.argmax(left), left.shape)
        paired.append(float(left[i, j]))
        left = np.delete(np.delete(left, i, axis=0), j, axis=1)
    return paired


def gcg_miou(records: Sequence[Mapping], matching: str = "greedy") -> float:
    """GLaMM's GCG mIoU: mean over images of the mean IoU of one-to-one mask pairs."""
    per_image = []
    for record in records:
        iou = _iou_matrix([p["rle"] for p in record["pred"]], [g["rle"] for g in record["gt"]])
        paired = _paired_ious(iou, matching)
        per_image.append(float(np.mean(paired)) if paired else 0.0)
    return float(np.mean(per_image)) if per_image else 0.0


def _recalled(iou: np.ndarray, match: np.ndarray, threshold: float) -> int:
    """GLaMM's ``find_best_matches`` count on a (gt, pred) IoU matrix and phrase matches."""
    iou, match, found = iou.copy(), match.copy(), 0
    while iou.size > 0:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        if iou[i, j] < threshold or not match[i, j]:
            break
        found += 1
        iou[i, :], iou[:, j] = 0.0, 0.0
        match[i, :], match[:, j] = False, False
    return found


def gcg_recall(
    records: Sequence[Mapping],
    phrase_match: Callable[[str, str], bool] = phrase_containment_match,
    iou_threshold: float = 0.5,
) -> float:
    """GLaMM's GCG recall: matched ground truth phrases / all ground truth phrases."""
    found, total = 0, 0
    for record in records:
        gt, pred = record["gt"], record["pred"]
        total += len(gt)
        iou = _iou_matrix([g["rle"] for g in gt], [p["rle"] for p in pred])
        match = np.array(
            [[bool(phrase_match(p["phrase"], g["phrase"])) for p in pred] for g in gt], dtype=bool
        ).reshape(len(gt), len(pred))
        found += _recalled(iou, match, iou_threshold)
    return found / total if total else 0.0


def simple_caption_tokens(caption: str) -> str:
    """Lower-cased words without punctuation: a Python stand-in for COCO's PTB tokenizer.

    Example:
        >>> simple_caption_tokens("A dog's toy, on the grass.")
        "a dog 's toy on the grass"
    """
    text = re.sub(r"(\w)('s|'re|'ve|'ll|'d|'m|n't)\b", r"\1 \2", caption.lower())
    return " ".join(re.findall(r"'?[\w]+(?:'\w+)*", text))


def gcg_caption_scores(records: Sequence[Mapping], java: bool) -> dict[str, float]:
    """CIDEr (and METEOR when ``java``) of the predicted captions against the references."""
    if not records:
        return {"cider": 0.0, **({"meteor": 0.0} if java else {})}
    from pycocoevalcap.cider.cider import Cider

    refs = {k: [{"caption": c} for c in r["refs"]] for k, r in enumerate(records)}
    res = {k: [{"caption": r["caption"]}] for k, r in enumerate(records)}
    if java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenizer = PTBTokenizer()
        refs, res = tokenizer.tokenize(refs), tokenizer.tokenize(res)
    else:
        refs = {k: [simple_caption_tokens(c["caption"]) for c in v] for k, v in refs.items()}
        res = {k: [simple_caption_tokens(c["caption"]) for c in v] for k, v in res.items()}
    out = {"cider": float(Cider().compute_score(refs, res)[0])}
    if java:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        out["meteor"] = float(scorer.compute_score(refs, res)[0])
        del scorer
    return out
